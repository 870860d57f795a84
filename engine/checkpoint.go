package engine

// residualSlots maps each of the L+1 residual streams (the input of each
// layer and the output of the last) to a buffer. With Options.Recompute
// and CheckpointEvery k > 1, only every k-th stream and the last keep a
// buffer of their own (the checkpoints); the k-1 streams between two
// checkpoints share k-1 buffers, which the backward pass refills segment
// by segment by running the segment's layers forward again. It returns the
// slot of each stream and the number of buffers.
func (o Options) residualSlots(c *Config) ([]int, int) {
	L := c.NumHiddenLayers
	k := o.CheckpointEvery
	slot := make([]int, L+1)
	if !o.Recompute || k <= 1 {
		for i := range slot {
			slot[i] = i
		}
		return slot, L + 1
	}
	n := 0
	for l := 0; l <= L; l++ {
		if l%k == 0 || l == L {
			slot[l] = n
			n++
		}
	}
	work := 0
	for l := 0; l <= L; l++ {
		if l%k != 0 && l != L {
			slot[l] = n + l%k - 1
			work = max(work, l%k)
		}
	}
	return slot, n + work
}

// CheckpointSpacing is the checkpoint spacing Fit turns on: about √L, which
// keeps the fewest residual buffers (L/k checkpoints + k-1 shared).
func (c *Config) CheckpointSpacing() int {
	k := 1
	for (k+1)*(k+1) <= c.NumHiddenLayers {
		k++
	}
	return max(k, 2)
}

// backwardLayers runs the layers' backward passes, last layer first,
// recomputing each layer's activations (Options.Recompute) and, with
// checkpoints, each segment's residual streams from the checkpoint that
// starts it.
func (m *Model) backwardLayers(bt *Batch) {
	L := m.Config.NumHiddenLayers
	k := m.Opt.CheckpointEvery
	if !m.Opt.Recompute || k <= 1 {
		for l := L - 1; l >= 0; l-- {
			if m.Opt.Recompute {
				m.recomputing = true
				m.layerForward(l, bt)
				m.recomputing = false
			}
			m.layerBackward(l, bt)
			m.layerBackwardDone(l)
		}
		return
	}
	for end := L; end > 0; {
		start := (end - 1) / k * k
		for l := start; l < end-1; l++ { // the segment's residual streams again
			m.layerForward(l, bt)
		}
		for l := end - 1; l >= start; l-- {
			m.recomputing = true
			m.layerForward(l, bt)
			m.recomputing = false
			m.layerBackward(l, bt)
			m.layerBackwardDone(l)
		}
		end = start
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
