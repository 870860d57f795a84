package engine

import "fmt"

// DecodeStep extends each decoder by one token, tokens[i] for decs[i], in
// one pass (Extend with one token each).
func DecodeStep(decs []*Decoder, tokens []int) ([][]float32, error) {
	feeds := make([][]int, len(tokens))
	for i := range tokens {
		feeds[i] = tokens[i : i+1]
	}
	return Extend(decs, feeds)
}

// Extend runs feeds[i], one or more tokens, through decs[i], every decoder
// in one pass: the linear layers (projections, MLP, output head) run as one
// matrix product over all the new tokens stacked, which is what makes
// serving several sequences cheaper than serving them one by one, and lets
// prompt chunks of several requests and the next tokens of running ones
// share one read of the weights; attention runs per sequence against its
// own key/value cache. The decoders may have different lengths but must
// share one model. It returns the logits (V) that follow the last token of
// each feed, views of one host buffer that the model reuses: the next call
// overwrites them (a fresh buffer each step would cost more than the copy,
// in page faults).
func Extend(decs []*Decoder, feeds [][]int) ([][]float32, error) {
	if len(decs) == 0 || len(decs) != len(feeds) {
		return nil, fmt.Errorf("decode step: %d decoders for %d feeds", len(decs), len(feeds))
	}
	m := decs[0].m
	V := m.Config.VocabSize
	for i, d := range decs {
		switch {
		case d.m != m:
			return nil, fmt.Errorf("decode step: decoder %d belongs to another model", i)
		case len(feeds[i]) == 0:
			return nil, fmt.Errorf("decode step: decoder %d: no tokens", i)
		case d.n+len(feeds[i]) > d.max:
			return nil, fmt.Errorf("decode step: decoder %d: %d tokens exceed the capacity %d", i, d.n+len(feeds[i]), d.max)
		}
		for _, id := range feeds[i] {
			if id < 0 || id >= V {
				return nil, fmt.Errorf("decode step: token %d outside the vocabulary [0, %d)", id, V)
			}
		}
		for _, e := range decs[:i] {
			if e == d {
				return nil, fmt.Errorf("decode step: decoder %d appears twice", i)
			}
		}
	}
	B := len(decs)
	logits := m.extend(&m.step, decs, feeds)
	if len(m.stepHost) < B*V {
		m.stepHost = make([]float32, B*V)
	}
	host := m.stepHost[:B*V]
	m.Dev.Download(host, logits)
	out := make([][]float32, B)
	for i := range decs {
		out[i] = host[i*V : (i+1)*V : (i+1)*V]
	}
	return out, nil
}

// extend runs validated feeds through their decoders using buffers b and
// returns the device logits (len(decs), V) after each feed's last token.
func (m *Model) extend(b *stepBufs, decs []*Decoder, feeds [][]int) []float32 {
	c, dev := m.Config, m.Dev
	B, C, V := len(decs), c.HiddenSize, c.VocabSize
	off := make([]int, B+1) // decoder i's rows are off[i] .. off[i+1]
	for i, f := range feeds {
		off[i+1] = off[i] + len(f)
	}
	R := off[B]
	b.grow(c, dev, R, B)
	for i, d := range decs {
		for j, id := range feeds[i] {
			b.hostIDs[off[i]+j], b.hostPos[off[i]+j] = int32(id), int32(d.n+j)
		}
		d.reserve(d.n + len(feeds[i]))
	}
	dev.UploadInt32(b.ids, b.hostIDs[:R])
	dev.UploadInt32(b.pos, b.hostPos[:R])
	eps := float32(c.RMSNormEps)
	x := b.x[:R*C]
	if q, ok := m.quantFor(m.Params.Embed); ok && q.only { // a host-memory device (LoadQuantized)
		embedQuant(q.q, x, b.hostIDs[:R], C)
	} else if m.nf4Head() {
		m.nf4Embed(x, b.hostIDs[:R])
	} else if m.Opt.FrozenBF16 {
		dev.EmbeddingBF16(x, b.ids, m.w16.Embed, R, C)
	} else {
		dev.Embedding(x, b.ids, m.Params.Embed, R, C)
	}
	for l := range m.Params.Layers {
		m.decodeLayer(b, decs, off, l, eps)
	}
	// Only each feed's last row needs logits: move them to the first B
	// rows (row i's last row is at or after i, past every earlier one).
	for i := range decs {
		if last := off[i+1] - 1; last != i {
			dev.Copy(x[i*C:(i+1)*C], x[last*C:(last+1)*C])
		}
	}
	ln := b.ln[:B*C]
	m.norm(ln, nil, b.rstd, x[:B*C], m.Params.NormF, B, C, eps)
	m.logitsDec(b.logits[:B*V], ln, B)
	for i, d := range decs {
		d.n += len(feeds[i])
	}
	return b.logits[:B*V]
}

// decodeLayer runs layer l for the new tokens of each decoder, held in b
// as consecutive rows, decoder i's at off[i] .. off[i+1]: the linear layers
// run over all the rows at once; each decoder's new key and value rows are
// copied into its cache, and its queries attend to that cache.
func (m *Model) decodeLayer(b *stepBufs, decs []*Decoder, off []int, l int, eps float32) {
	c, dev := m.Config, m.Dev
	R := off[len(decs)]
	C, QD, KVD, HD := c.HiddenSize, c.QDim(), c.KVDim(), c.HeadDim
	p, h := m.decodeParams(l), m.decodeLayer16(l)
	ln := b.ln[:R*C]
	m.norm(ln, nil, b.rstd, b.x[:R*C], p.LN1, R, C, eps)
	m.linearDec(b.q, ln, p.WQ, h.WQ, p.BQ, R, C, QD, overwrite)
	m.linearDec(b.k, ln, p.WK, h.WK, p.BK, R, C, KVD, overwrite)
	m.linearDec(b.v, ln, p.WV, h.WV, p.BV, R, C, KVD, overwrite)
	m.adaptQKV(l, b.q, b.k, b.v, ln, R)
	m.clipQKV(b.q, b.k, b.v, R)
	dev.RoPE(b.q, b.pos, m.ropeCos, m.ropeSin, R, c.NumAttentionHeads, HD)
	dev.RoPE(b.k, b.pos, m.ropeCos, m.ropeSin, R, c.NumKeyValueHeads, HD)
	for i, d := range decs {
		r0, r1 := off[i], off[i+1]
		per := r1 - r0
		dev.Copy(d.k[l][d.n*KVD:(d.n+per)*KVD], b.k[r0*KVD:r1*KVD])
		dev.Copy(d.v[l][d.n*KVD:(d.n+per)*KVD], b.v[r0*KVD:r1*KVD])
		dev.AttentionCached(b.att[r0*QD:r1*QD], b.q[r0*QD:r1*QD], d.k[l], d.v[l], d.n, per,
			c.NumAttentionHeads, c.NumKeyValueHeads, HD, c.Window())
	}
	m.projDec(l, projO, b.x[:R*C], b.att[:R*QD], p.WO, h.WO, p.BO, R, accumulate)
	m.mlpDec(b, l, p, h, R, eps)
}
