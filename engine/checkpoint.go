package engine

// Residual checkpoints (Options.CheckpointEvery k > 1, with Recompute).
//
// The L layers are cut into segments [e0=0,e1), [e1,e2), …, [e(m-1),L) of
// at most k layers. The forward pass keeps only the streams entering
// segments 2..m (the checkpoints, m-1 buffers) and passes the others
// through two transient buffers. The backward pass takes the segments last
// first: it runs a segment's layers forward again from its checkpoint (the
// first segment from the embedding, a copy of the same rows) into buffers
// that no live checkpoint holds, then each layer's recompute and backward.
// Segment j (from 1) therefore needs (j-1) + (n_j-1) buffers, or n_1 for
// the first: segments near the end, taken first while more checkpoints
// live, are shorter, and with B buffers L can reach B + B + (B-1) + … + 3.
// The cost is one more forward pass of the layers that do not end a
// segment, whatever B: their attention runs forward three times (the
// forward pass, the re-forward, the recomputation), the segments' last
// layers' twice. With KeepAttention the recomputation reuses the
// re-forward's attention outputs, so at most twice (keepatt.go).

// residualPlan is the segment boundaries ends (0 = ends[0] < … <
// ends[m] = L) and the number of (N,C) buffers the streams take.
type residualPlan struct {
	ends []int
	bufs int
}

// residualPlan returns the plan of checkpoints with segments of at most
// CheckpointEvery layers on the fewest buffers; ok is false without
// checkpoints (every stream its own buffer).
func (o Options) residualPlan(c *Config) (p residualPlan, ok bool) {
	L, k := c.NumHiddenLayers, o.CheckpointEvery
	if !o.Recompute || k <= 1 || L < 2 {
		return residualPlan{}, false
	}
	for B := 2; ; B++ {
		if ends, ok := segmentEnds(L, k, B); ok {
			return residualPlan{ends: ends, bufs: B}, true
		}
	}
}

// segmentEnds cuts L layers into segments of at most k layers that B
// buffers hold (see the comment above): segment j at most min(k, B-j+2)
// layers (the first min(k, B)), and at most B-1 segments, as the forward
// pass holds the m-1 checkpoints and two transient streams.
func segmentEnds(L, k, B int) ([]int, bool) {
	ends := []int{0}
	for j := 1; j <= B-1 && ends[len(ends)-1] < L; j++ {
		n := min(k, B-j+2)
		if j == 1 {
			n = min(k, B)
		}
		ends = append(ends, min(L, ends[len(ends)-1]+n))
	}
	return ends, ends[len(ends)-1] == L
}

// residualBuffers is how many (N,C) buffers the residual streams take.
func (o Options) residualBuffers(c *Config) int {
	if p, ok := o.residualPlan(c); ok {
		return p.bufs
	}
	return c.NumHiddenLayers + 1
}

// segmentSlots is the buffer of each stream of segment j (from 1) in the
// backward pass: the checkpoints e_1..e_(j-1) hold buffers 0..j-2, the
// segment's own stream stays in its checkpoint's and the others take the
// next ones; the first segment, from the embedding, takes buffers 0….
func (p residualPlan) segmentSlots(j int) []int {
	n := p.ends[j] - p.ends[j-1]
	slots := make([]int, n)
	for i := range slots {
		slots[i] = i
		if j > 1 {
			slots[i] = j - 2 + i
		}
	}
	return slots
}

// forwardSlots points the residual streams a.res at the buffers the
// forward pass uses: with checkpoints, checkpoint e_i in buffer i-1 and the
// other streams alternating between buffers m-1 and m.
func (a *activations) forwardSlots(o Options, c *Config) {
	p, ok := o.residualPlan(c)
	if !ok {
		for i := range a.res {
			a.res[i] = a.resBufs[i]
		}
		return
	}
	for l, b := range p.forwardSlots() {
		a.res[l] = a.resBufs[b]
	}
}

// forwardSlots is the buffer of each of the L+1 streams in the forward
// pass: checkpoint e_i in buffer i-1, the others alternating between
// buffers m-1 and m.
func (p residualPlan) forwardSlots() []int {
	m, L := len(p.ends)-1, p.ends[len(p.ends)-1]
	slots := make([]int, L+1)
	for l := range slots {
		slots[l] = m - 1 + l%2
	}
	for i := 1; i < m; i++ {
		slots[p.ends[i]] = i - 1
	}
	return slots
}

// CheckpointSpacing is the checkpoint spacing Fit turns on: the longest
// segment of the plan with the fewest residual buffers (the shortest of
// those, for the most segments and the least recomputation).
func (c *Config) CheckpointSpacing() int {
	best, bufs := 2, 0
	for k := 2; k <= max(2, c.NumHiddenLayers); k++ {
		if b := (Options{Recompute: true, CheckpointEvery: k}).residualBuffers(c); bufs == 0 || b < bufs {
			best, bufs = k, b
		}
	}
	return best
}

// backwardLayers runs the layers' backward passes, last layer first,
// recomputing each layer's activations (Options.Recompute) and, with
// checkpoints, each segment's residual streams from the checkpoint that
// starts it.
func (m *Model) backwardLayers(bt *Batch) {
	L := m.Config.NumHiddenLayers
	p, ok := m.Opt.residualPlan(m.Config)
	if !ok {
		for l := L - 1; l >= 0; l-- {
			m.gather(l, UseParams|UseGrads)
			if m.Opt.Recompute {
				m.recomputing = true
				m.layerForward(l, bt)
				m.recomputing = false
			}
			m.layerBackward(l, bt)
			m.release(l, UseParams|UseGrads)
			m.layerBackwardDone(l)
		}
		return
	}
	a := m.acts
	defer a.forwardSlots(m.Opt, m.Config)
	for j := len(p.ends) - 1; j >= 1; j-- {
		start, end := p.ends[j-1], p.ends[j]
		for i, b := range p.segmentSlots(j) {
			a.res[start+i] = a.resBufs[b]
		}
		if j == 1 {
			m.embed(bt)
		}
		for l := start; l < end-1; l++ { // the segment's residual streams again
			m.gather(l, UseParams)
			m.layerForward(l, bt)
			m.release(l, UseParams)
		}
		for l := end - 1; l >= start; l-- {
			m.gather(l, UseParams|UseGrads)
			m.recomputing = true
			m.layerForward(l, bt)
			m.recomputing = false
			m.layerBackward(l, bt)
			m.release(l, UseParams|UseGrads)
			m.layerBackwardDone(l)
		}
	}
}

// layerBackwardDone tells the LayerBackwardDone hook that layer l's
// gradients are final.
func (m *Model) layerBackwardDone(l int) {
	m.layerGradNorm(l)
	if m.LayerBackwardDone != nil {
		m.LayerBackwardDone(l)
	}
}
