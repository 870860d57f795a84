package engine

import "unsafe"

// OverwriteGrads is ZeroGrad without its pass over the gradients: the next
// ForwardBackward, which must follow before anything reads Grads, writes
// the gradients its weight-gradient products produce whole (each decoder
// layer's seven matrices and an untied head) instead of adding to them,
// and OverwriteGrads zeroes only the rest (embeddings, norms, biases). That
// saves the zeroing stream over most of the arena and the products' read
// of the old values. Until that pass, Grads hold stale values. Where the
// pass would not write those matrices whole (a frozen base or attached
// adapter, mixture-of-experts layers), it is ZeroGrad; so it is on a
// sharded model, whose gather buffer ShardHooks.Gather zeroes before each
// part's backward and whose gradients live in the hooks' shards.
func (m *Model) OverwriteGrads() {
	rest := m.overwriteRest()
	if rest == nil {
		m.ZeroGrad()
		return
	}
	m.gnorm.valid = false
	for _, rg := range rest {
		m.Dev.Zero(m.Grads.Arena[rg[0]:rg[1]])
	}
	m.gradFresh = true
}

// overwriteRest is the gradient arena less the ranges a pass writes whole,
// as ranges in order; nil where OverwriteGrads falls back to ZeroGrad.
func (m *Model) overwriteRest() [][2]int {
	c := m.Config
	if m.Opt.frozenBase() || m.frozen() || m.sharded() || c.MoE() || c.NumHiddenLayers == 0 {
		return nil
	}
	if m.overwrite != nil {
		return m.overwrite
	}
	base := uintptr(unsafe.Pointer(&m.Grads.Arena[0]))
	off := func(x []float32) [2]int {
		lo := int((uintptr(unsafe.Pointer(&x[0])) - base) / 4)
		return [2]int{lo, lo + len(x)}
	}
	var whole [][2]int
	for l := range m.Grads.Layers {
		g := &m.Grads.Layers[l]
		for _, x := range [][]float32{g.WQ, g.WK, g.WV, g.WO, g.WGate, g.WUp, g.WDown} {
			if len(x) == 0 {
				return nil
			}
			whole = append(whole, off(x))
		}
	}
	if !c.TieWordEmbeddings {
		whole = append(whole, off(m.Grads.LMHead))
	}
	// The complement, from the ranges sorted by offset.
	for i := 1; i < len(whole); i++ {
		for j := i; j > 0 && whole[j][0] < whole[j-1][0]; j-- {
			whole[j], whole[j-1] = whole[j-1], whole[j]
		}
	}
	rest := [][2]int{}
	at := 0
	for _, rg := range whole {
		if rg[0] < at {
			return nil // overlapping views: not a layout this knows
		}
		if rg[0] > at {
			rest = append(rest, [2]int{at, rg[0]})
		}
		at = rg[1]
	}
	if n := len(m.Grads.Arena); at < n {
		rest = append(rest, [2]int{at, n})
	}
	m.overwrite = rest
	return rest
}

// gradProduct is the flags of a weight-gradient product: it adds into the
// gradient, or overwrites it on the first pass after OverwriteGrads.
func (m *Model) gradProduct() MatMulFlags {
	f := dytX
	f.Acc = !m.gradFresh
	return f
}
