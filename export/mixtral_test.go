package export_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"hone/export"
	"hone/internal/testmodel"
	"hone/safetensors"
)

// mixtralTiny is Mixtral-shaped (SentencePiece vocabulary, GQA, top-2 of 4
// experts) and small.
const mixtralTiny = `{"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 32000, "hidden_size": 32,
	"intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
	"num_local_experts": 4, "num_experts_per_tok": 2, "rms_norm_eps": 1e-5, "rope_theta": 1000000,
	"max_position_embeddings": 4096, "sliding_window": null, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2}`

// A Mixtral export is llama.cpp's llama architecture with experts: the
// expert counts, the router as ffn_gate_inp, and each layer's experts'
// w1, w3, w2 stacked into ffn_gate_exps, ffn_up_exps, ffn_down_exps
// (ggml dimensions in, out, expert), read back with gguf-parser-go.
func TestGGUFMixtral(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.WriteWith(t, dir, mixtralTiny, "tokenizer-llama2", 5)
	out := filepath.Join(t.TempDir(), "mixtral.gguf")
	if err := export.GGUF(context.Background(), dir, out, export.GGUFOptions{DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	f, raw := readGGUF(t, out)
	for key, want := range map[string]any{"general.architecture": "llama", "llama.expert_count": uint32(4),
		"llama.expert_used_count": uint32(2), "llama.feed_forward_length": uint32(48)} {
		if got := kv(t, f, key).Value; got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// per layer: attn_norm, q, k, v, output, ffn_norm, gate_inp, 3 stacked; plus embd, output_norm, output
	if got, want := len(f.TensorInfos), 2*10+3; got != want {
		t.Errorf("%d tensors, want %d", got, want)
	}
	for l := 0; l < 2; l++ {
		router := fmt.Sprintf("model.layers.%d.block_sparse_moe.gate.weight", l)
		got, ti := tensorFloats(t, f, raw, fmt.Sprintf("blk.%d.ffn_gate_inp.weight", l))
		if want := readST(t, st, router); !slices.Equal(got, want) || !slices.Equal(ti.Dimensions, []uint64{32, 4}) {
			t.Errorf("layer %d router: dimensions %v, values equal %v", l, ti.Dimensions, slices.Equal(got, want))
		}
		for hf, g := range map[string]struct {
			name string
			dims []uint64
		}{"w1": {"ffn_gate_exps", []uint64{32, 48, 4}}, "w3": {"ffn_up_exps", []uint64{32, 48, 4}}, "w2": {"ffn_down_exps", []uint64{48, 32, 4}}} {
			got, ti := tensorFloats(t, f, raw, fmt.Sprintf("blk.%d.%s.weight", l, g.name))
			if !slices.Equal(ti.Dimensions, g.dims) {
				t.Errorf("blk.%d.%s: dimensions %v, want %v", l, g.name, ti.Dimensions, g.dims)
			}
			per := len(got) / 4
			for e := 0; e < 4; e++ {
				want := readST(t, st, fmt.Sprintf("model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l, e, hf))
				if !slices.Equal(got[e*per:(e+1)*per], want) {
					t.Errorf("blk.%d.%s expert %d differs from %s", l, g.name, e, hf)
				}
			}
		}
	}
	if _, ok := f.TensorInfos.Get("blk.0.ffn_gate.weight"); ok {
		t.Error("a dense ffn_gate tensor in a Mixtral export")
	}
}

func readST(t *testing.T, st *safetensors.Model, name string) []float32 {
	t.Helper()
	info, ok := st.Info(name)
	if !ok {
		t.Fatalf("no tensor %s", name)
	}
	x := make([]float32, info.NumElements())
	if err := st.Float32(name, x); err != nil {
		t.Fatal(err)
	}
	return x
}
