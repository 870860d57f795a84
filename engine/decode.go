package engine

import "fmt"

// kvBlock is how many tokens the key/value cache grows by at a time: a
// decoder holds memory for the tokens it has, rounded up, not for its whole
// capacity, so many short requests fit where a few long ones are allowed.
const kvBlock = 256

// Decoder extends one sequence a few tokens at a time, keeping every
// layer's keys and values so each new token costs one token's forward pass
// (plus attention over the cache) instead of the whole sequence's. It reads
// the fp32 master weights, or their bf16 copy with Options.DecodeBF16, or
// the bf16 weights of a frozen bf16 base (Options.FrozenBF16), or the NF4
// matrices of an NF4 base (nf4dec.go), and applies
// an attached adapter (Attach) without dropout. A Decoder is not safe for
// concurrent use; the model must not train while it is in use. Close
// releases its device memory.
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
	moe                              moeStep // Mixtral only
}

// NewDecoder starts an empty sequence of at most max tokens.
func (m *Model) NewDecoder(max int) (*Decoder, error) {
	if m.nf4 != nil {
		if err := m.prepareNF4Decode(); err != nil {
			return nil, err
		}
	}
	if m.Opt.FrozenBF16 && m.Config.MoE() {
		return nil, errFrozenBF16("decode a mixture of experts")
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
	b.moe.free(dev)
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
	NF := c.routedRows(n) * F
	b.gate, b.up, b.h = dev.Alloc(NF), dev.Alloc(NF), dev.Alloc(NF)
	if c.MoE() {
		b.moe = allocMoEStep(dev, c, n)
	}
	b.logits = dev.Alloc(nLogits * c.VocabSize)
	b.ids, b.pos = dev.AllocInt32(n), dev.AllocInt32(n)
	b.hostIDs, b.hostPos = make([]int32, n), make([]int32, n)
	b.cap = n
}

// Append runs the new tokens through the model and returns the logits (V)
// that follow the last of them.
func (d *Decoder) Append(ids []int) ([]float32, error) {
	m, c := d.m, d.m.Config
	n := len(ids)
	if n == 0 {
		return nil, fmt.Errorf("decoder: no tokens")
	}
	if d.n+n > d.max {
		return nil, fmt.Errorf("decoder: %d tokens exceed the capacity %d", d.n+n, d.max)
	}
	for _, id := range ids {
		if id < 0 || id >= c.VocabSize {
			return nil, fmt.Errorf("decoder: token %d outside the vocabulary [0, %d)", id, c.VocabSize)
		}
	}
	out := m.extend(&d.buf, []*Decoder{d}, [][]int{ids})
	logits := make([]float32, c.VocabSize)
	m.Dev.Download(logits, out)
	return logits, nil
}

// mlpDec adds the feed-forward block of layer l, p (bf16 copy h, empty for
// fp32 weights), to the n rows of b.x.
func (m *Model) mlpDec(b *stepBufs, l int, p *Layer[float32], h *Layer[uint16], n int, eps float32) {
	c, dev := m.Config, m.Dev
	C, F := c.HiddenSize, c.IntermediateSize
	ln := b.ln[:n*C]
	m.norm(ln, nil, b.rstd, b.x[:n*C], p.LN2, n, C, eps)
	if c.MoE() {
		m.moeDecode(b, l, p, n)
		return
	}
	m.projDec(l, projGate, b.gate, ln, p.WGate, h.WGate, p.BGate, n, overwrite)
	m.projDec(l, projUp, b.up, ln, p.WUp, h.WUp, p.BUp, n, overwrite)
	dev.SwiGLU(b.h, nil, b.gate, b.up, n*F)
	m.projDec(l, projDown, b.x[:n*C], b.h, p.WDown, h.WDown, p.BDown, n, accumulate)
}

// projDec is linearDec for projection p of layer l, plus the attached
// adapter's s·B(A x) when it wraps that projection, as the forward pass
// adds it.
func (m *Model) projDec(l, p int, y, x, w []float32, w16 []uint16, b []float32, n int, o output) {
	in, out := m.Config.siteDims(p)
	m.linearDec(y, x, w, w16, b, n, in, out, o)
	m.adapt(l, p, y, x, n)
}

// linearDec is linear for decoding: fp32 activations times the bf16 weights
// w16 when the model decodes in bf16 (see Options.DecodeBF16), else times
// the fp32 weights w, whatever precision training uses.
func (m *Model) linearDec(y, x, w []float32, w16 []uint16, b []float32, n, in, out int, o output) {
	if q, ok := m.quantFor(w); ok && w16 == nil && n <= 16 {
		q.q.MatVec(y[:n*out], x[:n*in], n, bool(o), q.threads)
	} else if ok && w16 == nil && q.only { // a long prompt without an fp32 copy
		m.quantMatMul(q.q, y, x, n, in, out, bool(o))
	} else if w16 != nil {
		m.Dev.MatMulW16(y, x, w16, n, out, in, bool(o))
	} else {
		m.Dev.MatMul(y, x, w, n, out, in, MatMulFlags{TransB: true, Acc: bool(o)})
	}
	if b != nil {
		m.Dev.AddBias(y, b, n, out)
	}
}

// decodeWeights returns the bf16 weights decoding reads, or nil when it
// reads the fp32 ones. The copy is made on first use and again after the
// parameters change; BF16 training mode's own copy serves when there is one.
func (m *Model) decodeWeights() *WeightSet[uint16] {
	switch {
	case m.Opt.FrozenBF16: // the only copy of the matrices
		return m.w16
	case !m.Opt.DecodeBF16:
		return nil
	case m.w16 != nil:
		m.refresh16()
		return m.w16
	case m.dec16 == nil:
		m.dec16 = newWeightSet(m.Config, m.Dev.AllocBF16(len(m.Params.Arena)))
		m.dec16Stale = true
	}
	if m.dec16Stale {
		m.Dev.ToBF16(m.dec16.Arena, m.Params.Arena)
		m.dec16Stale = false
	}
	return m.dec16
}

// decodeLayer16 is layer l of the bf16 decode weights, or an empty Layer.
func (m *Model) decodeLayer16(l int) *Layer[uint16] {
	if w := m.decodeWeights(); w != nil {
		return &w.Layers[l]
	}
	return &noWeights16
}

// noWeights16 is the (read-only) empty bf16 layer of fp32 decoding, shared
// so the decode loop allocates none per layer.
var noWeights16 Layer[uint16]

// logitsDec writes the output head's logits(n,V) for the n rows of ln.
func (m *Model) logitsDec(logits, ln []float32, n int) {
	var w16 []uint16
	if w := m.decodeWeights(); w != nil {
		w16 = w.LMHead
	}
	head := m.Params.LMHead
	if m.nf4Head() {
		head = m.nf4.dec.head
	}
	m.linearDec(logits, ln, head, w16, nil, n, m.Config.HiddenSize, m.Config.VocabSize, overwrite)
}
