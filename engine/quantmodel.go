package engine

import (
	"fmt"
	"strings"
	"sync"

	"hone/safetensors"
)

// LoadQuantized reads the model directory dir like Load, except that the
// tensors named in mats (checkpoint names of layer matrices, lm_head.weight
// or model.embed_tokens.weight, untied) are not read: the model holds them only as the given
// quantized matrices, so its weight memory is about the quantized file's
// size plus the tensors kept in fp32 (embeddings, norms, biases, matrices
// of other types). Such a model decodes only (NewDecoder, the serving
// path), on a host-memory device in fp32: prompt prefill and decode steps
// both multiply by the quantized matrices, and nothing else may read its
// matrices (training, saving, merging, bf16 decoding). Mixtures of experts
// are refused.
func LoadQuantized(dir string, dev Device, mats map[string]QuantMatrix, threads int) (*Model, error) {
	c, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	if c.MoE() || c.IsDBRX() {
		return nil, fmt.Errorf("load quantized model %s: %s is a mixture of experts; quantized decoding takes Llama-style models only", dir, c.archName())
	}
	if c.TieWordEmbeddings && (mats["lm_head.weight"] != nil || mats[embedName] != nil) {
		return nil, fmt.Errorf("load quantized model %s: lm_head.weight is tied to the embeddings and cannot be held quantized", dir)
	}
	specs := map[string]ParamSpec{}
	for _, s := range c.ParamSpecs() {
		specs[s.Name] = s
	}
	for name, q := range mats {
		s, ok := specs[name]
		if !ok || len(s.Shape) != 2 {
			return nil, fmt.Errorf("load quantized model %s: %q is not a weight matrix of this model (%s)", dir, name, c.describe())
		}
		if r, k := q.Dims(); r != s.Shape[0] || k != s.Shape[1] {
			return nil, fmt.Errorf("load quantized model %s: quantized %q is %dx%d, config.json implies %v", dir, name, r, k, s.Shape)
		}
	}
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		return nil, fmt.Errorf("load quantized model %s: %w", dir, err)
	}
	defer st.Close()
	if err := checkTensors(c, st); err != nil {
		return nil, fmt.Errorf("load quantized model %s: %w", dir, err)
	}
	kept := c.respec(func(s ParamSpec) bool { return mats[s.Name] == nil })
	m := &Model{Config: c, Dev: dev, Opt: Options{LossChunk: 256}, layer16Of: -1}
	m.Params = weightSetOf(c, kept, dev.Alloc(specsSize(kept)))
	v := c.vectorSpecs()
	m.Grads = weightSetOf(c, v, dev.Alloc(specsSize(v)))
	for _, s := range kept {
		dst := m.Params.Arena[s.Offset : s.Offset+s.Size()]
		if err := FillDevice(dev, dst, func(host []float32) error { return st.Float32(s.Name, host) }); err != nil {
			m.Close()
			return nil, fmt.Errorf("load quantized model %s: %w", dir, err)
		}
	}
	// A dropped matrix's view is a one-element stand-in: decoding finds
	// its quantized form by the view's address (quantFor) and reads
	// nothing through it.
	for name, q := range mats {
		w := make([]float32, 1)
		*m.matrixView(name) = w
		if m.quant == nil {
			m.quant = map[*float32]quantMatrix{}
		}
		m.quant[&w[0]] = quantMatrix{q: q, threads: threads, only: true}
	}
	m.ParamsChanged()
	return m, nil
}

// embedName is the token embeddings' checkpoint name: LoadQuantized may
// hold them quantized too, decoding then dequantizing only the rows it
// looks up (embedQuant).
const embedName = "model.embed_tokens.weight"

// matrixView is the Params field viewing the matrix called name.
func (m *Model) matrixView(name string) *[]float32 {
	switch name {
	case "lm_head.weight":
		return &m.Params.LMHead
	case embedName:
		return &m.Params.Embed
	}
	for l := range m.Params.Layers {
		if suffix, ok := strings.CutPrefix(name, m.Config.layerPrefix(l)); ok {
			return layerMatrix(&m.Params.Layers[l], suffix)
		}
	}
	panic("engine: no matrix " + name) // LoadQuantized checked the names
}

// layerMatrix is p's field of the matrix whose checkpoint name ends in
// suffix (after the layer's prefix).
func layerMatrix(p *Layer[float32], suffix string) *[]float32 {
	switch suffix {
	case "self_attn.q_proj.weight":
		return &p.WQ
	case "self_attn.k_proj.weight":
		return &p.WK
	case "self_attn.v_proj.weight":
		return &p.WV
	case "self_attn.o_proj.weight":
		return &p.WO
	case "mlp.gate_proj.weight":
		return &p.WGate
	case "mlp.up_proj.weight":
		return &p.WUp
	case "mlp.down_proj.weight":
		return &p.WDown
	}
	panic("engine: no layer matrix " + suffix)
}

// HeldWeightBytes is the memory the model's weights occupy: the fp32 (and
// bf16) arenas plus the quantized matrices held without an fp32 copy (an
// NF4 base's, NF4Bytes).
func (m *Model) HeldWeightBytes() int64 {
	n := int64(len(m.Params.Arena))*4 + m.NF4Bytes()
	for _, w := range []*WeightSet[uint16]{m.w16, m.dec16} {
		if w != nil {
			n += int64(len(w.Arena)) * 2
		}
	}
	for _, q := range m.quant {
		if _, nf := q.q.(*nf4Matrix); q.only && !nf {
			n += int64(q.q.Bytes())
		}
	}
	return n
}

// quantMatMul is y(n,rows) (+)= x(n,cols)·Wᵀ for a quantized W of a long
// prompt: a band of W's rows at a time dequantized into a small fp32
// scratch and multiplied on the device, so that W is expanded once per
// call rather than once per prompt row (MatVec) and never whole. When one
// band covers W and y is overwritten, the product goes straight to y;
// otherwise through a band-wide scratch copied or added into y's columns
// (the device's Acc need not round as one addition: oneDNN's matches it
// here, but products sliced along k add into c slice by slice). Both
// scratches are reused across calls rather than allocated and zeroed.
func (m *Model) quantMatMul(q QuantMatrix, y, x []float32, n, in, out int, acc bool) {
	band := max(1, min(out, (1<<20)/in)) // about 4 MiB of weights
	w := getScratch(&bandWeights, band*in)
	defer bandWeights.Put(w)
	if band == out && !acc {
		q.DequantizeRows(*w, 0, out)
		m.Dev.MatMul(y[:n*out], x[:n*in], *w, n, out, in, MatMulFlags{TransB: true})
		return
	}
	tmp := getScratch(&bandProducts, n*band)
	defer bandProducts.Put(tmp)
	for o0 := 0; o0 < out; o0 += band {
		r := min(band, out-o0)
		q.DequantizeRows((*w)[:r*in], o0, o0+r)
		m.Dev.MatMul((*tmp)[:n*r], x[:n*in], (*w)[:r*in], n, r, in, MatMulFlags{TransB: true})
		for i := 0; i < n; i++ {
			dst, src := y[i*out+o0:i*out+o0+r], (*tmp)[i*r:(i+1)*r]
			if acc {
				for j, v := range src {
					dst[j] += v
				}
			} else {
				copy(dst, src)
			}
		}
	}
}

// bandWeights and bandProducts pool quantMatMul's scratches (*[]float32),
// so that concurrent decoders each get their own and idle ones go with
// the next collections.
var bandWeights, bandProducts sync.Pool

// getScratch returns a pooled slice of n elements (contents undefined).
func getScratch(p *sync.Pool, n int) *[]float32 {
	s, _ := p.Get().(*[]float32)
	if s == nil || cap(*s) < n {
		b := make([]float32, n)
		return &b
	}
	*s = (*s)[:n]
	return s
}

// embedQuant writes the embeddings of ids to x (C each) from the quantized
// table, dequantizing those rows only.
func embedQuant(q QuantMatrix, x []float32, ids []int32, C int) {
	for i, id := range ids {
		q.DequantizeRows(x[i*C:(i+1)*C], int(id), int(id)+1)
	}
}
