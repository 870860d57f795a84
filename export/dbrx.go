package export

import (
	"context"
	"fmt"
	"math"
	"strings"

	"hone/engine"
	"hone/gguf"
)

// DBRX exports as llama.cpp's dbrx architecture, with the tensor layout its
// converter (convert_hf_to_gguf.py, DbrxModel) writes: the fused Wqkv as
// attn_qkv (no Q/K permutation: dbrx uses NeoX-style rotary embeddings,
// HF's layout), norm_2 as attn_output_norm, and the fused experts viewed
// (E, F, C), w2 transposed to (E, C, F).

// dbrxExportable refuses what llama.cpp's dbrx graph cannot compute: it
// divides the chosen experts' weights by their sum, so only p = 1.
func dbrxExportable(c *engine.Config) error {
	if c.ExpertNormP == nil || *c.ExpertNormP != 1 {
		return fmt.Errorf("%w: DBRX with ffn_config.moe_normalize_expert_weights other than 1 cannot be exported to GGUF: llama.cpp normalises the expert weights by their sum", ErrInvalid)
	}
	return nil
}

func writeDBRXHyperparameters(w *gguf.Writer, c *engine.Config) {
	w.Uint32("dbrx.vocab_size", uint32(c.VocabSize))
	w.Uint32("dbrx.context_length", uint32(c.MaxPositionEmbeddings))
	w.Uint32("dbrx.embedding_length", uint32(c.HiddenSize))
	w.Uint32("dbrx.block_count", uint32(c.NumHiddenLayers))
	w.Uint32("dbrx.feed_forward_length", uint32(c.IntermediateSize))
	w.Uint32("dbrx.attention.head_count", uint32(c.NumAttentionHeads))
	w.Uint32("dbrx.attention.head_count_kv", uint32(c.NumKeyValueHeads))
	w.Float32("dbrx.rope.freq_base", float32(c.RopeTheta))
	// llama.cpp clamps by this value unconditionally; no clip is the
	// largest float.
	clamp := float32(math.MaxFloat32)
	if c.ClipQKV != nil {
		clamp = float32(*c.ClipQKV)
	}
	w.Float32("dbrx.attention.clamp_kqv", clamp)
	w.Float32("dbrx.attention.layer_norm_epsilon", float32(c.RMSNormEps))
	w.Uint32("dbrx.expert_count", uint32(c.NumLocalExperts))
	w.Uint32("dbrx.expert_used_count", uint32(c.NumExpertsPerTok))
}

// dbrxNames maps HF's DBRX names (after "transformer.blocks.N.") to llama.cpp's.
var dbrxNames = map[string]string{
	"norm_attn_norm.norm_1.weight": "attn_norm.weight", "norm_attn_norm.attn.Wqkv.weight": "attn_qkv.weight",
	"norm_attn_norm.attn.out_proj.weight": "attn_output.weight", "norm_attn_norm.norm_2.weight": "attn_output_norm.weight",
	"ffn.router.layer.weight": "ffn_gate_inp.weight", "ffn.experts.mlp.w1": "ffn_gate_exps.weight",
	"ffn.experts.mlp.v1": "ffn_up_exps.weight", "ffn.experts.mlp.w2": "ffn_down_exps.weight",
}

// dbrxTensors lists the GGUF tensors of a DBRX model.
func (s *source) dbrxTensors(ctx context.Context, mix *typeMixer) []gguf.Tensor {
	c := s.cfg
	E, F, C := c.NumLocalExperts, c.IntermediateSize, c.HiddenSize
	var out []gguf.Tensor
	for _, p := range c.ParamSpecs() {
		name, shape := "", p.Shape
		switch p.Name {
		case "transformer.wte.weight":
			name = "token_embd.weight"
		case "transformer.norm_f.weight":
			name = "output_norm.weight"
		case "lm_head.weight":
			name = "output.weight"
		default:
			rest := strings.TrimPrefix(p.Name, "transformer.blocks.")
			layer, rest, _ := strings.Cut(rest, ".")
			name = "blk." + layer + "." + dbrxNames[rest]
		}
		down := strings.HasSuffix(p.Name, ".ffn.experts.mlp.w2")
		switch {
		case down:
			shape = []int{E, C, F}
		case strings.Contains(p.Name, ".ffn.experts.mlp."):
			shape = []int{E, F, C}
		}
		typ := mix.pick(name, shape)
		out = append(out, gguf.Tensor{Name: name, Shape: shape, Type: typ, Fill: func(dst []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			x := make([]float32, p.Size())
			if err := s.st.Float32(p.Name, x); err != nil {
				return err
			}
			if down { // each expert's (F,C) block to (C,F)
				x = transposeBlocks(x, E, F, C)
			}
			gguf.Quantize(typ, dst, x, shape[len(shape)-1])
			return nil
		}})
	}
	return out
}

// transposeBlocks transposes each of the n (rows, cols) blocks of x.
func transposeBlocks(x []float32, n, rows, cols int) []float32 {
	out := make([]float32, len(x))
	for b := 0; b < n; b++ {
		src, dst := x[b*rows*cols:], out[b*rows*cols:]
		for i := 0; i < rows; i++ {
			for j := 0; j < cols; j++ {
				dst[j*rows+i] = src[i*cols+j]
			}
		}
	}
	return out
}
