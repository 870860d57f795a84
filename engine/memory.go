package engine

// MemoryEstimate returns the bytes a training model of this config needs for
// micro-batches of B rows of T tokens: parameters, gradients and AdamW
// moments (fp32), the bf16 weight copy in BF16 mode, activations and
// scratch. It lets a run refuse at start-up instead of running out of
// memory on its first long batch an hour in.
func (c *Config) MemoryEstimate(opt Options, B, T int) int64 {
	P := c.NumParams()
	bytes := 4 * P * 4 // params, grads, m, v
	if opt.BF16 && !opt.CompactBF16 {
		bytes += 2 * P
	} else if opt.BF16 {
		lo, hi := c.layerRange(0)
		bytes += 2 * (int64(c.VocabSize*c.HiddenSize) + int64(hi-lo))
	}
	N := int64(B * T)
	C, F, QD, KVD, V := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.QDim()), int64(c.KVDim()), int64(c.VocabSize)
	L, NH := int64(c.NumHiddenLayers), int64(c.NumAttentionHeads)
	perLayer := N * (4*C + 2*QD + 2*KVD + 3*F + 2 + NH)
	layers := L
	if opt.Recompute {
		layers = 1
	}
	chunk := int64(opt.LossChunk)
	if chunk <= 0 {
		chunk = 256
	}
	chunk = min(chunk, N)
	floats := layers*perLayer + (L+1)*N*C + N*(C+1) + chunk*V + N*(2*C+2*QD+2*KVD+3*F)
	// Attention block scratch: scores and their gradient, plus gathers.
	tq := int64(T)
	if NH*int64(T)*int64(T) > 8<<20 {
		tq = 128
	}
	floats += 2*NH*tq*int64(T) + 4*tq*QD
	bytes += 4 * floats
	if opt.BF16 {
		bytes += 2 * 2 * max(N*max(C, F, QD), chunk*V)
	}
	return bytes
}

// Reserve allocates every activation buffer for micro-batches of B rows of
// T tokens now, so memory problems show at start-up.
func (m *Model) Reserve(B, T int) { m.ensure(B, T) }
