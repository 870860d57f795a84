package engine

// The global gradient norm of a full fine-tune is a sum of squares in a
// fixed grouping: each decoder layer's arena range (layerRange), then the
// ranges before and after the layers (embeddings, final norm, head), each
// one SumSquares call, their float64 results added in that order. Fused
// (FuseGradNorm), each layer's term is taken right after the backward pass
// of a step's last micro-batch finishes that layer's gradients, while much
// of them is still in cache, and the rest at the end of the pass; the
// optimizer then reads the norm with no pass of its own. Unfused, GradNorm
// takes the same terms in a pass of its own. Both add the same float64
// terms in the same order, so the fused norm equals the unfused one bit
// for bit, clipping decides alike and resumed runs match.
type gradNorm struct {
	armed  bool      // the next ForwardBackward computes the norm
	active bool      // this pass computes it
	valid  bool      // sq holds the norm² of the current gradients
	init   bool      // layers and rest are set
	layers [][2]int  // per decoder layer, its arena range
	rest   [][2]int  // the ranges outside the layers
	part   []float64 // per layer, its sum of squares
	sq     float64
}

// FuseGradNorm makes the next ForwardBackward, which must be the last
// micro-batch of the optimizer step, compute the gradients' squared norm as
// it finishes them, so GradNorm needs no pass of its own. Nothing may change
// Grads between that pass and GradNorm (a data-parallel reduction does:
// there, leave it off). It does nothing for a frozen base, whose Grads the
// optimizer does not read, nor on a sharded model, whose Grads are a
// gather buffer that each part's Release hands to the hooks before its
// term could be taken.
func (m *Model) FuseGradNorm() {
	if m.Opt.frozenBase() || m.sharded() {
		return
	}
	m.gnorm.armed = len(m.gradRanges().layers) > 0
}

// gradRanges sets and returns the grouping of the norm's terms.
func (m *Model) gradRanges() *gradNorm {
	g := &m.gnorm
	if g.init {
		return g
	}
	g.init = true
	c, n := m.Config, len(m.Grads.Arena)
	if m.Opt.frozenBase() || c.NumHiddenLayers == 0 {
		return g
	}
	first, _ := c.layerRange(0)
	_, last := c.layerRange(c.NumHiddenLayers - 1)
	if first < 0 || last > n || first >= last {
		return g
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		lo, hi := c.layerRange(l)
		g.layers = append(g.layers, [2]int{lo, hi})
	}
	if first > 0 {
		g.rest = append(g.rest, [2]int{0, first})
	}
	if last < n {
		g.rest = append(g.rest, [2]int{last, n})
	}
	g.part = make([]float64, len(g.layers))
	return g
}

// startGradNorm begins a backward pass: whatever it adds makes a held norm
// stale.
func (m *Model) startGradNorm() {
	g := &m.gnorm
	g.valid, g.active, g.armed = false, g.armed, false
	clear(g.part)
}

// layerGradNorm sums layer l's finished gradients.
func (m *Model) layerGradNorm(l int) {
	if g := &m.gnorm; g.active {
		rg := g.layers[l]
		g.part[l] = m.Dev.SumSquares(m.Grads.Arena[rg[0]:rg[1]])
	}
}

// finishGradNorm adds the rest of the arena once the pass is over.
func (m *Model) finishGradNorm() {
	g := &m.gnorm
	if !g.active {
		return
	}
	g.active = false
	g.sq, g.valid = m.sumGradParts(g.part), true
}

// sumGradParts adds the layers' terms and then the rest's, in order.
func (m *Model) sumGradParts(part []float64) float64 {
	var s float64
	for _, p := range part {
		s += p
	}
	for _, rg := range m.gnorm.rest {
		s += m.Dev.SumSquares(m.Grads.Arena[rg[0]:rg[1]])
	}
	return s
}

// gradSumSquares is the gradients' squared norm in a pass of its own, in
// the fused path's grouping where there is one.
func (m *Model) gradSumSquares() float64 {
	g := m.gradRanges()
	if len(g.layers) == 0 {
		return m.Dev.SumSquares(m.Grads.Arena)
	}
	part := make([]float64, len(g.layers))
	for l, rg := range g.layers {
		part[l] = m.Dev.SumSquares(m.Grads.Arena[rg[0]:rg[1]])
	}
	return m.sumGradParts(part)
}
