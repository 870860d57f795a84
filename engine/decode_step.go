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
		m.stepLayer(decs, l, eps)
	}
	ln := b.ln[:B*C]
	dev.RMSNorm(ln, nil, b.rstd, b.x[:B*C], m.Params.NormF, B, C, eps)
	V := c.VocabSize
	dev.MatMul(b.logits[:B*V], ln, m.Params.LMHead, B, V, C, xWt)
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

// stepLayer runs layer l of DecodeStep: each sequence's new key and value
// rows are copied into its cache, and its query attends to that cache.
func (m *Model) stepLayer(decs []*Decoder, l int, eps float32) {
	c, dev, b := m.Config, m.Dev, &m.step
	B := len(decs)
	C, QD, KVD, HD := c.HiddenSize, c.QDim(), c.KVDim(), c.HeadDim
	p := &m.Params.Layers[l]
	ln := b.ln[:B*C]
	dev.RMSNorm(ln, nil, b.rstd, b.x[:B*C], p.LN1, B, C, eps)
	m.linearF32(b.q, ln, p.WQ, p.BQ, B, C, QD, overwrite)
	m.linearF32(b.k, ln, p.WK, p.BK, B, C, KVD, overwrite)
	m.linearF32(b.v, ln, p.WV, p.BV, B, C, KVD, overwrite)
	dev.RoPE(b.q, b.pos, m.ropeCos, m.ropeSin, B, c.NumAttentionHeads, HD)
	dev.RoPE(b.k, b.pos, m.ropeCos, m.ropeSin, B, c.NumKeyValueHeads, HD)
	for i, d := range decs {
		dev.Copy(d.k[l][d.n*KVD:(d.n+1)*KVD], b.k[i*KVD:(i+1)*KVD])
		dev.Copy(d.v[l][d.n*KVD:(d.n+1)*KVD], b.v[i*KVD:(i+1)*KVD])
		dev.AttentionCached(b.att[i*QD:(i+1)*QD], b.q[i*QD:(i+1)*QD], d.k[l], d.v[l], d.n, 1,
			c.NumAttentionHeads, c.NumKeyValueHeads, HD, c.Window())
	}
	m.linearF32(b.x[:B*C], b.att[:B*QD], p.WO, p.BO, B, QD, C, accumulate)
	m.mlpF32(b, p, B, eps)
}
