package export_test

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"hone/engine"
	"hone/export"
	"hone/gguf"
	"hone/internal/testmodel"
)

// GGUFWeights reads each tensor a writer's chunk at a time, only the rows
// the chunk covers (whole heads for the permuted Q and K rows, one expert
// of a stacked tensor): chunks of any size give the values of decoding the
// whole tensor and reordering it, for dense and Mixtral files, quantized
// and not.
func TestGGUFWeightsChunksEqualWholeTensors(t *testing.T) {
	const dense = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 128,
	"intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
	"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 256, "tie_word_embeddings": false,
	"bos_token_id": 1, "eos_token_id": 2}`
	for _, tc := range []struct{ name, cfg, dtype string }{
		{"dense", dense, "q4_k_m"},
		{"dense", dense, "f32"},
		{"mixtral", mixtralTiny, "bf16"},
	} {
		dir := filepath.Join(t.TempDir(), "model")
		testmodel.WriteWith(t, dir, tc.cfg, "tokenizer-llama2", 7)
		file := filepath.Join(t.TempDir(), "m.gguf")
		if err := export.GGUF(context.Background(), dir, file, export.GGUFOptions{DType: tc.dtype}); err != nil {
			t.Fatal(err)
		}
		c, err := engine.LoadConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		tensors, closeFn, err := export.GGUFWeights(file, c)
		if err != nil {
			t.Fatal(err)
		}
		g, err := gguf.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, ts := range tensors {
			want := wholeTensor(t, g, c, ts.Name)
			for _, chunk := range []int{1000, 4099, len(want)} {
				got := make([]float32, len(want))
				for off := 0; off < len(got); off += chunk {
					if err := ts.Fill(got[off:min(off+chunk, len(got))], off); err != nil {
						t.Fatalf("%s %s: Fill(%d): %v", tc.name, ts.Name, off, err)
					}
				}
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("%s/%s: %s[%d] in chunks of %d = %v, whole tensor %v", tc.name, tc.dtype, ts.Name, i, chunk, got[i], want[i])
					}
				}
			}
		}
		g.Close()
		closeFn()
	}
}

// wholeTensor is the HF tensor name decoded from g whole: its GGUF
// tensor (llama.cpp's names, written out here), the expert's part of a
// stacked one, Q and K rows unpermuted.
func wholeTensor(t *testing.T, g *gguf.File, c *engine.Config, name string) []float32 {
	t.Helper()
	gname, expert := map[string]string{"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
		"lm_head.weight": "output.weight"}[name], -1
	if gname == "" {
		layer, rest, _ := strings.Cut(strings.TrimPrefix(name, "model.layers."), ".")
		if e, mat, ok := strings.Cut(strings.TrimPrefix(rest, "block_sparse_moe.experts."), "."); ok && strings.HasPrefix(rest, "block_sparse_moe.experts.") {
			expert, _ = strconv.Atoi(e)
			rest = map[string]string{"w1.weight": "ffn_gate_exps.weight", "w2.weight": "ffn_down_exps.weight", "w3.weight": "ffn_up_exps.weight"}[mat]
		}
		for _, r := range [][2]string{{"input_layernorm.", "attn_norm."}, {"self_attn.q_proj.", "attn_q."}, {"self_attn.k_proj.", "attn_k."},
			{"self_attn.v_proj.", "attn_v."}, {"self_attn.o_proj.", "attn_output."}, {"post_attention_layernorm.", "ffn_norm."},
			{"mlp.gate_proj.", "ffn_gate."}, {"mlp.up_proj.", "ffn_up."}, {"mlp.down_proj.", "ffn_down."}, {"block_sparse_moe.gate.", "ffn_gate_inp."}} {
			rest = strings.Replace(rest, r[0], r[1], 1)
		}
		gname = "blk." + layer + "." + rest
	}
	all, ti, err := g.Float32(gname)
	if err != nil {
		t.Fatal(err)
	}
	x := all
	if expert >= 0 {
		n := len(all) / ti.Shape[0]
		x = all[expert*n : (expert+1)*n]
	}
	cols := ti.Shape[len(ti.Shape)-1]
	switch {
	case strings.Contains(name, ".q_proj."):
		x = export.UnpermuteQK(x, c.NumAttentionHeads, cols)
	case strings.Contains(name, ".k_proj."):
		x = export.UnpermuteQK(x, c.NumKeyValueHeads, cols)
	}
	return x
}
