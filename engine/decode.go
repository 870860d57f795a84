package engine

import "fmt"

// Decoder extends one sequence a few tokens at a time, keeping every
// layer's keys and values so each new token costs one token's forward pass
// (plus attention over the cache) instead of the whole sequence's. It uses
// the fp32 master weights. A Decoder is not safe for concurrent use; the
// model must not train while it is in use. Close releases its device
// memory.
type Decoder struct {
	m      *Model
	max, n int         // capacity and tokens so far
	k, v   [][]float32 // L × (max, KVD) post-RoPE keys and values
	logits []float32   // (V)
	// per-call device buffers for up to cap new tokens, grown on demand
	cap                              int
	x, ln, q, att, gate, up, h, rstd []float32
	ids, pos                         []int32
	hostIDs, hostPos                 []int32
}

// NewDecoder starts an empty sequence of at most max tokens.
func (m *Model) NewDecoder(max int) (*Decoder, error) {
	if max <= 0 || max > m.Config.MaxPositionEmbeddings {
		return nil, fmt.Errorf("decoder: length %d must be in [1, max_position_embeddings %d]", max, m.Config.MaxPositionEmbeddings)
	}
	if len(m.ropeCos) < max*m.Config.HeadDim/2 {
		m.buildRope(max)
	}
	d := &Decoder{m: m, max: max, logits: m.Dev.Alloc(m.Config.VocabSize)}
	for l := 0; l < m.Config.NumHiddenLayers; l++ {
		d.k = append(d.k, m.Dev.Alloc(max*m.Config.KVDim()))
		d.v = append(d.v, m.Dev.Alloc(max*m.Config.KVDim()))
	}
	return d, nil
}

// Close releases the decoder's device memory; it must not be used after.
func (d *Decoder) Close() {
	dev := d.m.Dev
	d.freeStep()
	freeAll(dev, d.k...)
	freeAll(dev, d.v...)
	dev.Free(d.logits)
	d.k, d.v, d.logits = nil, nil, nil
}

// freeStep releases the per-call buffers.
func (d *Decoder) freeStep() {
	if d.cap == 0 {
		return
	}
	dev := d.m.Dev
	freeAll(dev, d.x, d.ln, d.q, d.att, d.gate, d.up, d.h, d.rstd)
	dev.FreeInt32(d.ids)
	dev.FreeInt32(d.pos)
	d.cap = 0
}

// Len is the number of tokens decoded so far.
func (d *Decoder) Len() int { return d.n }

func (d *Decoder) grow(n int) {
	if d.cap >= n {
		return
	}
	d.freeStep()
	c, dev := d.m.Config, d.m.Dev
	C, F, QD := c.HiddenSize, c.IntermediateSize, c.QDim()
	d.x, d.ln, d.rstd = dev.Alloc(n*C), dev.Alloc(n*C), dev.Alloc(n)
	d.q, d.att = dev.Alloc(n*QD), dev.Alloc(n*QD)
	d.gate, d.up, d.h = dev.Alloc(n*F), dev.Alloc(n*F), dev.Alloc(n*F)
	d.ids, d.pos = dev.AllocInt32(n), dev.AllocInt32(n)
	d.hostIDs, d.hostPos = make([]int32, n), make([]int32, n)
	d.cap = n
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
	for i, id := range ids {
		if id < 0 || id >= c.VocabSize {
			return nil, fmt.Errorf("decoder: token %d outside the vocabulary [0, %d)", id, c.VocabSize)
		}
		d.hostIDs[i], d.hostPos[i] = int32(id), int32(d.n+i)
	}
	dev.UploadInt32(d.ids, d.hostIDs[:n])
	dev.UploadInt32(d.pos, d.hostPos[:n])
	x, ln := d.x[:n*C], d.ln[:n*C]
	dev.Embedding(x, d.ids, m.Params.Embed, n, C)
	for l := range m.Params.Layers {
		p := &m.Params.Layers[l]
		dev.RMSNorm(ln, nil, d.rstd, x, p.LN1, n, C, eps)
		m.linearF32(d.q, ln, p.WQ, p.BQ, n, C, QD, overwrite)
		// New keys and values go straight into the cache rows.
		kc, vc := d.k[l][d.n*KVD:(d.n+n)*KVD], d.v[l][d.n*KVD:(d.n+n)*KVD]
		m.linearF32(kc, ln, p.WK, p.BK, n, C, KVD, overwrite)
		m.linearF32(vc, ln, p.WV, p.BV, n, C, KVD, overwrite)
		dev.RoPE(d.q, d.pos, m.ropeCos, m.ropeSin, n, c.NumAttentionHeads, c.HeadDim)
		dev.RoPE(kc, d.pos, m.ropeCos, m.ropeSin, n, c.NumKeyValueHeads, c.HeadDim)
		dev.AttentionCached(d.att, d.q[:n*QD], d.k[l], d.v[l], d.n, n, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.Window())
		m.linearF32(x, d.att, p.WO, p.BO, n, QD, C, accumulate)
		dev.RMSNorm(ln, nil, d.rstd, x, p.LN2, n, C, eps)
		m.linearF32(d.gate, ln, p.WGate, p.BGate, n, C, F, overwrite)
		m.linearF32(d.up, ln, p.WUp, p.BUp, n, C, F, overwrite)
		dev.SwiGLU(d.h, nil, d.gate, d.up, n*F)
		m.linearF32(x, d.h, p.WDown, p.BDown, n, F, C, accumulate)
	}
	last := x[(n-1)*C : n*C]
	dev.RMSNorm(ln[:C], nil, d.rstd, last, m.Params.NormF, 1, C, eps)
	dev.MatMul(d.logits, ln[:C], m.Params.LMHead, 1, c.VocabSize, C, xWt)
	logits := make([]float32, c.VocabSize)
	dev.Download(logits, d.logits)
	d.n += n
	return logits, nil
}

// linearF32 is linear on the fp32 weights whatever the model's precision.
func (m *Model) linearF32(y, x, w, b []float32, n, in, out int, o output) {
	m.Dev.MatMul(y, x, w, n, out, in, MatMulFlags{TransB: true, Acc: bool(o)})
	if b != nil {
		m.Dev.AddBias(y, b, n, out)
	}
}
