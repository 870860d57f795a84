package engine

import "fmt"

// Decoder extends one sequence a few tokens at a time, keeping every
// layer's keys and values so each new token costs one token's forward pass
// (plus attention over the cache) instead of the whole sequence's. It uses
// the fp32 master weights. A Decoder is not safe for concurrent use; the
// model must not train while it is in use.
type Decoder struct {
	m      *Model
	max, n int         // capacity and tokens so far
	k, v   [][]float32 // L × (max, KVD) post-RoPE keys and values
	pos    []int32
	// per-call buffers for up to `max` new tokens, grown on demand
	x, ln, q, kn, vn, att, gate, up, h, rstd []float32
}

// NewDecoder starts an empty sequence of at most max tokens.
func (m *Model) NewDecoder(max int) (*Decoder, error) {
	if max <= 0 || max > m.Config.MaxPositionEmbeddings {
		return nil, fmt.Errorf("decoder: length %d must be in [1, max_position_embeddings %d]", max, m.Config.MaxPositionEmbeddings)
	}
	if len(m.ropeCos) < max*m.Config.HeadDim/2 {
		m.buildRope(max)
	}
	d := &Decoder{m: m, max: max}
	for l := 0; l < m.Config.NumHiddenLayers; l++ {
		d.k = append(d.k, m.Dev.Alloc(max*m.Config.KVDim()))
		d.v = append(d.v, m.Dev.Alloc(max*m.Config.KVDim()))
	}
	return d, nil
}

// Len is the number of tokens decoded so far.
func (d *Decoder) Len() int { return d.n }

func (d *Decoder) grow(n int) {
	if len(d.rstd) >= n {
		return
	}
	c, dev := d.m.Config, d.m.Dev
	C, F, QD, KVD := c.HiddenSize, c.IntermediateSize, c.QDim(), c.KVDim()
	d.x, d.ln, d.rstd = dev.Alloc(n*C), dev.Alloc(n*C), dev.Alloc(n)
	d.q, d.kn, d.vn, d.att = dev.Alloc(n*QD), dev.Alloc(n*KVD), dev.Alloc(n*KVD), dev.Alloc(n*QD)
	d.gate, d.up, d.h = dev.Alloc(n*F), dev.Alloc(n*F), dev.Alloc(n*F)
	d.pos = make([]int32, n)
}

// Append runs the new tokens through the model and returns the logits (V)
// that follow the last of them.
func (d *Decoder) Append(ids []int) ([]float32, error) {
	m, c, dev := d.m, d.m.Config, d.m.Dev
	n := len(ids)
	if n == 0 {
		return nil, fmt.Errorf("decoder: no tokens")
	}
	if d.n+n > d.max {
		return nil, fmt.Errorf("decoder: %d tokens exceed the capacity %d", d.n+n, d.max)
	}
	d.grow(n)
	C, F, QD, KVD := c.HiddenSize, c.IntermediateSize, c.QDim(), c.KVDim()
	eps := float32(c.RMSNormEps)
	tok := make([]int32, n)
	for i, id := range ids {
		if id < 0 || id >= c.VocabSize {
			return nil, fmt.Errorf("decoder: token %d outside the vocabulary [0, %d)", id, c.VocabSize)
		}
		tok[i], d.pos[i] = int32(id), int32(d.n+i)
	}
	x, ln := d.x[:n*C], d.ln[:n*C]
	dev.Embedding(x, tok, m.Params.Embed, n, C)
	for l := range m.Params.Layers {
		p := &m.Params.Layers[l]
		dev.RMSNorm(ln, nil, d.rstd, x, p.LN1, n, C, eps)
		m.linearF32(d.q, ln, p.WQ, p.BQ, n, C, QD, false)
		// New keys and values go straight into the cache rows.
		kc, vc := d.k[l][d.n*KVD:(d.n+n)*KVD], d.v[l][d.n*KVD:(d.n+n)*KVD]
		m.linearF32(kc, ln, p.WK, p.BK, n, C, KVD, false)
		m.linearF32(vc, ln, p.WV, p.BV, n, C, KVD, false)
		dev.RoPE(d.q, d.pos, m.ropeCos, m.ropeSin, n, c.NumAttentionHeads, c.HeadDim)
		dev.RoPE(kc, d.pos, m.ropeCos, m.ropeSin, n, c.NumKeyValueHeads, c.HeadDim)
		dev.AttentionCached(d.att, d.q[:n*QD], d.k[l], d.v[l], d.n, n, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
		m.linearF32(x, d.att, p.WO, p.BO, n, QD, C, true)
		dev.RMSNorm(ln, nil, d.rstd, x, p.LN2, n, C, eps)
		m.linearF32(d.gate, ln, p.WGate, p.BGate, n, C, F, false)
		m.linearF32(d.up, ln, p.WUp, p.BUp, n, C, F, false)
		dev.SwiGLU(d.h, nil, d.gate, d.up, n*F)
		m.linearF32(x, d.h, p.WDown, p.BDown, n, F, C, true)
	}
	last := x[(n-1)*C : n*C]
	dev.RMSNorm(ln[:C], nil, d.rstd, last, m.Params.NormF, 1, C, eps)
	logits := make([]float32, c.VocabSize)
	dev.MatMul(logits, ln[:C], m.Params.LMHead, 1, c.VocabSize, C, false, true, false)
	d.n += n
	return logits, nil
}

// linearF32 is linear on the fp32 weights whatever the model's precision.
func (m *Model) linearF32(y, x, w, b []float32, n, in, out int, acc bool) {
	m.Dev.MatMul(y, x, w, n, out, in, false, true, acc)
	if b != nil {
		m.Dev.AddBias(y, b, n, out)
	}
}
