package engine

import "fmt"

// kvBlock is how many tokens the key/value cache grows by at a time: a
// decoder holds memory for the tokens it has, rounded up, not for its whole
// capacity, so many short requests fit where a few long ones are allowed.
const kvBlock = 256

// Decoder extends one sequence a few tokens at a time, keeping every
// layer's keys and values so each new token costs one token's forward pass
// (plus attention over the cache) instead of the whole sequence's. It uses
// the fp32 master weights. A Decoder is not safe for concurrent use; the
// model must not train while it is in use. Close releases its device
// memory.
type Decoder struct {
	m      *Model
	max, n int         // capacity and tokens so far
	kvCap  int         // tokens the cache holds before it must grow
	k, v   [][]float32 // L × (kvCap, KVD) post-RoPE keys and values
	buf    stepBufs
}

// stepBufs are the device buffers of one forward call of up to cap tokens,
// grown on demand: a Decoder's for its own calls, a Model's for DecodeStep.
type stepBufs struct {
	cap                              int
	x, ln, q, att, gate, up, h, rstd []float32
	k, v                             []float32 // (cap, KVD) new keys and values, before they go to a cache
	logits                           []float32 // (cap, V) for DecodeStep, (V) for Append
	ids, pos                         []int32
	hostIDs, hostPos                 []int32
}

// NewDecoder starts an empty sequence of at most max tokens.
func (m *Model) NewDecoder(max int) (*Decoder, error) {
	if m.Opt.FrozenBF16 {
		return nil, errFrozenBF16("decode")
	}
	if max <= 0 || max > m.Config.MaxPositionEmbeddings {
		return nil, fmt.Errorf("decoder: length %d must be in [1, max_position_embeddings %d]", max, m.Config.MaxPositionEmbeddings)
	}
	if len(m.ropeCos) < max*m.Config.HeadDim/2 {
		m.buildRope(max)
	}
	return &Decoder{m: m, max: max}, nil
}

// Close releases the decoder's device memory; it must not be used after.
func (d *Decoder) Close() {
	dev := d.m.Dev
	d.buf.free(dev)
	freeAll(dev, d.k...)
	freeAll(dev, d.v...)
	d.k, d.v, d.kvCap = nil, nil, 0
}

// Len is the number of tokens decoded so far.
func (d *Decoder) Len() int { return d.n }

// reserve makes room in the cache for n tokens, growing it a block (or a
// doubling, for long sequences) at a time and keeping what it holds.
func (d *Decoder) reserve(n int) {
	if n <= d.kvCap {
		return
	}
	c, dev := d.m.Config, d.m.Dev
	KVD := c.KVDim()
	grown := min(d.max, (max(n, 2*d.kvCap)+kvBlock-1)/kvBlock*kvBlock)
	for l := 0; l < c.NumHiddenLayers; l++ {
		k, v := dev.Alloc(grown*KVD), dev.Alloc(grown*KVD)
		if d.kvCap > 0 {
			if d.n > 0 {
				dev.Copy(k[:d.n*KVD], d.k[l][:d.n*KVD])
				dev.Copy(v[:d.n*KVD], d.v[l][:d.n*KVD])
			}
			freeAll(dev, d.k[l], d.v[l])
			d.k[l], d.v[l] = k, v
		} else {
			d.k, d.v = append(d.k, k), append(d.v, v)
		}
	}
	d.kvCap = grown
}

// free releases the buffers, if any.
func (b *stepBufs) free(dev Device) {
	if b.cap == 0 {
		return
	}
	freeAll(dev, b.x, b.ln, b.q, b.att, b.gate, b.up, b.h, b.rstd, b.k, b.v, b.logits)
	dev.FreeInt32(b.ids)
	dev.FreeInt32(b.pos)
	*b = stepBufs{}
}

// grow sizes the buffers for n tokens and nLogits rows of logits.
func (b *stepBufs) grow(c *Config, dev Device, n, nLogits int) {
	if b.cap >= n && len(b.logits) >= nLogits*c.VocabSize {
		return
	}
	n = max(n, b.cap)
	nLogits = max(nLogits, len(b.logits)/c.VocabSize)
	b.free(dev)
	C, F, QD, KVD := c.HiddenSize, c.IntermediateSize, c.QDim(), c.KVDim()
	b.x, b.ln, b.rstd = dev.Alloc(n*C), dev.Alloc(n*C), dev.Alloc(n)
	b.q, b.att = dev.Alloc(n*QD), dev.Alloc(n*QD)
	b.k, b.v = dev.Alloc(n*KVD), dev.Alloc(n*KVD)
	b.gate, b.up, b.h = dev.Alloc(n*F), dev.Alloc(n*F), dev.Alloc(n*F)
	b.logits = dev.Alloc(nLogits * c.VocabSize)
	b.ids, b.pos = dev.AllocInt32(n), dev.AllocInt32(n)
	b.hostIDs, b.hostPos = make([]int32, n), make([]int32, n)
	b.cap = n
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
	b := &d.buf
	b.grow(c, dev, n, 1)
	C := c.HiddenSize
	eps := float32(c.RMSNormEps)
	for i, id := range ids {
		if id < 0 || id >= c.VocabSize {
			return nil, fmt.Errorf("decoder: token %d outside the vocabulary [0, %d)", id, c.VocabSize)
		}
		b.hostIDs[i], b.hostPos[i] = int32(id), int32(d.n+i)
	}
	d.reserve(d.n + n)
	dev.UploadInt32(b.ids, b.hostIDs[:n])
	dev.UploadInt32(b.pos, b.hostPos[:n])
	x, ln := b.x[:n*C], b.ln[:n*C]
	dev.Embedding(x, b.ids, m.Params.Embed, n, C)
	decs := []*Decoder{d}
	for l := range m.Params.Layers {
		m.decodeLayer(b, decs, n, l, eps)
	}
	last := x[(n-1)*C : n*C]
	dev.RMSNorm(ln[:C], nil, b.rstd, last, m.Params.NormF, 1, C, eps)
	dev.MatMul(b.logits[:c.VocabSize], ln[:C], m.Params.LMHead, 1, c.VocabSize, C, xWt)
	logits := make([]float32, c.VocabSize)
	dev.Download(logits, b.logits[:c.VocabSize])
	d.n += n
	return logits, nil
}

// mlpF32 adds the feed-forward block of layer p to the n rows of b.x.
func (m *Model) mlpF32(b *stepBufs, p *Layer[float32], n int, eps float32) {
	c, dev := m.Config, m.Dev
	C, F := c.HiddenSize, c.IntermediateSize
	ln := b.ln[:n*C]
	dev.RMSNorm(ln, nil, b.rstd, b.x[:n*C], p.LN2, n, C, eps)
	m.linearF32(b.gate, ln, p.WGate, p.BGate, n, C, F, overwrite)
	m.linearF32(b.up, ln, p.WUp, p.BUp, n, C, F, overwrite)
	dev.SwiGLU(b.h, nil, b.gate, b.up, n*F)
	m.linearF32(b.x[:n*C], b.h, p.WDown, p.BDown, n, F, C, accumulate)
}

// linearF32 is linear on the fp32 weights whatever the model's precision.
func (m *Model) linearF32(y, x, w, b []float32, n, in, out int, o output) {
	m.Dev.MatMul(y, x, w, n, out, in, MatMulFlags{TransB: true, Acc: bool(o)})
	if b != nil {
		m.Dev.AddBias(y, b, n, out)
	}
}
