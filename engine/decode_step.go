package engine

import "fmt"

// DecodeStep extends each decoder by one token, tokens[i] for decs[i], in
// one pass: the linear layers (projections, MLP, output head) run as one
// matrix product over the stacked tokens, which is what makes serving
// several sequences cheaper than serving them one by one; attention runs
// per sequence against its own key/value cache. The decoders may have
// different lengths but must share one model. It returns the logits (V)
// that follow each new token, views of one host buffer that the model
// reuses: the next DecodeStep overwrites them (a fresh buffer each step
// would cost more than the copy, in page faults).
func DecodeStep(decs []*Decoder, tokens []int) ([][]float32, error) {
	if len(decs) == 0 || len(decs) != len(tokens) {
		return nil, fmt.Errorf("decode step: %d decoders for %d tokens", len(decs), len(tokens))
	}
	m := decs[0].m
	c, dev := m.Config, m.Dev
	B := len(decs)
	b := &m.step
	b.grow(c, dev, B, B)
	for i, d := range decs {
		switch {
		case d.m != m:
			return nil, fmt.Errorf("decode step: decoder %d belongs to another model", i)
		case d.n+1 > d.max:
			return nil, fmt.Errorf("decode step: decoder %d: %d tokens exceed the capacity %d", i, d.n+1, d.max)
		case tokens[i] < 0 || tokens[i] >= c.VocabSize:
			return nil, fmt.Errorf("decode step: token %d outside the vocabulary [0, %d)", tokens[i], c.VocabSize)
		}
		for _, e := range decs[:i] {
			if e == d {
				return nil, fmt.Errorf("decode step: decoder %d appears twice", i)
			}
		}
		b.hostIDs[i], b.hostPos[i] = int32(tokens[i]), int32(d.n)
	}
	for _, d := range decs {
		d.reserve(d.n + 1)
	}
	dev.UploadInt32(b.ids, b.hostIDs[:B])
	dev.UploadInt32(b.pos, b.hostPos[:B])
	C := c.HiddenSize
	eps := float32(c.RMSNormEps)
	dev.Embedding(b.x[:B*C], b.ids, m.Params.Embed, B, C)
	for l := range m.Params.Layers {
		m.decodeLayer(b, decs, 1, l, eps)
	}
	ln := b.ln[:B*C]
	dev.RMSNorm(ln, nil, b.rstd, b.x[:B*C], m.Params.NormF, B, C, eps)
	V := c.VocabSize
	m.logitsDec(b.logits[:B*V], ln, B)
	if len(m.stepHost) < B*V {
		m.stepHost = make([]float32, B*V)
	}
	host := m.stepHost[:B*V]
	dev.Download(host, b.logits[:B*V])
	out := make([][]float32, B)
	for i, d := range decs {
		d.n++
		out[i] = host[i*V : (i+1)*V : (i+1)*V]
	}
	return out, nil
}

// decodeLayer runs layer l for per new tokens of each decoder, held in b
// as consecutive rows, decoder after decoder: the linear layers run over all
// the rows at once; each decoder's new key and value rows are copied into
// its cache, and its queries attend to that cache.
func (m *Model) decodeLayer(b *stepBufs, decs []*Decoder, per, l int, eps float32) {
	c, dev := m.Config, m.Dev
	R := len(decs) * per
	C, QD, KVD, HD := c.HiddenSize, c.QDim(), c.KVDim(), c.HeadDim
	p, h := &m.Params.Layers[l], m.decodeLayer16(l)
	ln := b.ln[:R*C]
	dev.RMSNorm(ln, nil, b.rstd, b.x[:R*C], p.LN1, R, C, eps)
	m.linearDec(b.q, ln, p.WQ, h.WQ, p.BQ, R, C, QD, overwrite)
	m.linearDec(b.k, ln, p.WK, h.WK, p.BK, R, C, KVD, overwrite)
	m.linearDec(b.v, ln, p.WV, h.WV, p.BV, R, C, KVD, overwrite)
	dev.RoPE(b.q, b.pos, m.ropeCos, m.ropeSin, R, c.NumAttentionHeads, HD)
	dev.RoPE(b.k, b.pos, m.ropeCos, m.ropeSin, R, c.NumKeyValueHeads, HD)
	for i, d := range decs {
		rows := func(w int) (int, int) { return i * per * w, (i + 1) * per * w }
		k0, k1 := rows(KVD)
		dev.Copy(d.k[l][d.n*KVD:(d.n+per)*KVD], b.k[k0:k1])
		dev.Copy(d.v[l][d.n*KVD:(d.n+per)*KVD], b.v[k0:k1])
		q0, q1 := rows(QD)
		dev.AttentionCached(b.att[q0:q1], b.q[q0:q1], d.k[l], d.v[l], d.n, per,
			c.NumAttentionHeads, c.NumKeyValueHeads, HD, c.Window())
	}
	m.linearDec(b.x[:R*C], b.att[:R*QD], p.WO, h.WO, p.BO, R, QD, C, accumulate)
	m.mlpDec(b, p, h, R, eps)
}
