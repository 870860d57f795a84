package export

import (
	"fmt"
	"strings"

	"hone/engine"
	"hone/gguf"
)

// QuantizedTypes are the GGUF tensor types decoding reads quantized
// (gguf.Matrix's dequantize-and-dot kernels: Q6_K is the output matrix and
// some attn_v / ffn_down of the _M mixes); other tensors decode from
// their dequantized fp32 copy.
var QuantizedTypes = []gguf.TensorType{gguf.Q8_0, gguf.Q4_K, gguf.Q6_K}

// LoadQuantized loads the GGUF file at path, whose weights Unpack wrote to
// dir, for decoding from its quantized tensors: the model holds the fp32
// weights of dir (for the prompt's prefill) and decodes through the Q8_0
// Q4_K and Q6_K matrices of the file itself (engine.Model.SetQuantized), with
// up to threads goroutines. It reports how many matrices decode quantized.
func LoadQuantized(path, dir string, dev engine.Device, threads int) (*engine.Model, int, error) {
	m, err := engine.Load(dir, dev, engine.Options{})
	if err != nil {
		return nil, 0, err
	}
	g, err := gguf.Open(path)
	if err != nil {
		m.Close()
		return nil, 0, err
	}
	defer g.Close()
	c := m.Config
	n := 0
	for l, p := range m.Params.Layers {
		for _, t := range []struct {
			name  string
			w     []float32
			heads int
		}{{"attn_q", p.WQ, c.NumAttentionHeads}, {"attn_k", p.WK, c.NumKeyValueHeads}, {"attn_v", p.WV, 0}, {"attn_output", p.WO, 0},
			{"ffn_gate", p.WGate, 0}, {"ffn_up", p.WUp, 0}, {"ffn_down", p.WDown, 0}} {
			ok, err := setQuantized(m, g, fmt.Sprintf("blk.%d.%s.weight", l, t.name), t.w, t.heads, threads)
			if err != nil {
				m.Close()
				return nil, 0, err
			}
			if ok {
				n++
			}
		}
	}
	if _, untied := g.Tensor("output.weight"); untied {
		ok, err := setQuantized(m, g, "output.weight", m.Params.LMHead, 0, threads)
		if err != nil {
			m.Close()
			return nil, 0, err
		}
		if ok {
			n++
		}
	}
	return m, n, nil
}

// setQuantized hands tensor name of g to m for decoding in place of w,
// when it is of a type the kernels take, with the rows of a permuted query
// or key projection (heads > 0) put back in HF's order.
func setQuantized(m *engine.Model, g *gguf.File, name string, w []float32, heads, threads int) (bool, error) {
	ti, ok := g.Tensor(name)
	if !ok || w == nil || len(ti.Shape) != 2 {
		return false, nil
	}
	quantized := false
	for _, t := range QuantizedTypes {
		quantized = quantized || ti.Type == t
	}
	if !quantized {
		return false, nil
	}
	raw, err := g.Raw(ti)
	if err != nil {
		return false, err
	}
	rows, cols := ti.Shape[0], ti.Shape[1]
	if rows*cols != len(w) {
		return false, fmt.Errorf("load %s: %s has %dx%d elements, the model's matrix %d", g.String("general.name"), name, rows, cols, len(w))
	}
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
		return false, fmt.Errorf("load %s: %w", strings.TrimSpace(name), err)
	}
	m.SetQuantized(w, q, threads)
	return true, nil
}
