package export

import (
	"fmt"
	"strings"

	"hone/engine"
	"hone/gguf"
)

// QuantizedTypes are the GGUF tensor types decoding reads quantized
// (gguf.Matrix's kernels: Q6_K is the output matrix and some attn_v /
// ffn_down of the _M mixes, Q5_K q5_k_m's other matrices); other tensors
// decode from their dequantized fp32 copy.
var QuantizedTypes = []gguf.TensorType{gguf.Q8_0, gguf.Q4_K, gguf.Q5_K, gguf.Q6_K}

// LoadQuantized loads the GGUF file at path, whose weights Unpack wrote to
// dir, for decoding from its quantized tensors: its Q8_0, Q4_K, Q5_K and Q6_K
// matrices are held only as the file's blocks (engine.LoadQuantized), for
// prefill and decode steps alike, with up to threads goroutines, and the
// other tensors are read from dir in fp32. It reports how many matrices
// are held quantized.
func LoadQuantized(path, dir string, dev engine.Device, threads int) (*engine.Model, int, error) {
	c, err := engine.LoadConfig(dir)
	if err != nil {
		return nil, 0, err
	}
	g, err := gguf.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer g.Close()
	mats := map[string]engine.QuantMatrix{}
	for l := 0; l < c.NumHiddenLayers; l++ {
		for _, t := range []struct {
			name, hf string
			heads    int
		}{{"attn_q", "self_attn.q_proj", c.NumAttentionHeads}, {"attn_k", "self_attn.k_proj", c.NumKeyValueHeads},
			{"attn_v", "self_attn.v_proj", 0}, {"attn_output", "self_attn.o_proj", 0},
			{"ffn_gate", "mlp.gate_proj", 0}, {"ffn_up", "mlp.up_proj", 0}, {"ffn_down", "mlp.down_proj", 0}} {
			q, err := quantMatrix(g, fmt.Sprintf("blk.%d.%s.weight", l, t.name), t.heads)
			if err != nil {
				return nil, 0, err
			}
			if q != nil {
				mats[fmt.Sprintf("model.layers.%d.%s.weight", l, t.hf)] = q
			}
		}
	}
	if !c.TieWordEmbeddings {
		// The token embeddings too: decoding dequantizes only the rows it
		// looks up.
		for name, hf := range map[string]string{"output.weight": "lm_head.weight", "token_embd.weight": "model.embed_tokens.weight"} {
			q, err := quantMatrix(g, name, 0)
			if err != nil {
				return nil, 0, err
			}
			if q != nil {
				mats[hf] = q
			}
		}
	}
	m, err := engine.LoadQuantized(dir, dev, mats, threads)
	if err != nil {
		return nil, 0, fmt.Errorf("load %s: %w", path, err)
	}
	return m, len(mats), nil
}

// quantMatrix is tensor name of g as a matrix for the dequantize-and-dot
// kernels, or nil when it is absent or of a type they do not take, with
// the rows of a permuted query or key projection (heads > 0) put back in
// HF's order.
func quantMatrix(g *gguf.File, name string, heads int) (*gguf.Matrix, error) {
	ti, ok := g.Tensor(name)
	if !ok || len(ti.Shape) != 2 {
		return nil, nil
	}
	quantized := false
	for _, t := range QuantizedTypes {
		quantized = quantized || ti.Type == t
	}
	if !quantized {
		return nil, nil
	}
	raw, err := g.Raw(ti)
	if err != nil {
		return nil, err
	}
	rows, cols := ti.Shape[0], ti.Shape[1]
	if heads > 0 { // GGUF row 2i+j of a head is HF row j*hd/2+i
		rb := ti.Type.RowBytes(cols)
		hd := rows / heads
		out := make([]byte, len(raw))
		for h := 0; h < heads; h++ {
			for i := 0; i < hd/2; i++ {
				for j := 0; j < 2; j++ {
					src, dst := h*hd+2*i+j, h*hd+j*hd/2+i
					copy(out[dst*rb:(dst+1)*rb], raw[src*rb:(src+1)*rb])
				}
			}
		}
		raw = out
	}
	q, err := gguf.NewMatrix(ti.Type, rows, cols, raw)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", strings.TrimSpace(name), err)
	}
	return q, nil
}
