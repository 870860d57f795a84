package engine

// residualSlots maps each of the L+1 residual streams (the input of each
// layer and the output of the last) to a buffer. With Options.Recompute
// and CheckpointEvery k > 1, only every k-th stream and the last keep a
// buffer of their own (the checkpoints); the k-1 streams between two
// checkpoints share k-1 buffers, which the backward pass refills segment
// by segment by running the segment's layers forward again. With more
// than one segment the last stream shares the first's buffer: the first
// stream is dead once layer 0 ran, the last once the final norm's backward
// ran, before the backward pass reaches the first segment, which embeds
// the batch again (a copy of the same rows). It returns the slot of each
// stream and the number of buffers.
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
		if l == L && o.sharedEnds(c) {
			slot[l] = slot[0]
		} else if l%k == 0 || l == L {
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

// sharedEnds says the first and last residual streams share a buffer
// (residualSlots).
func (o Options) sharedEnds(c *Config) bool {
	return o.Recompute && o.CheckpointEvery > 1 && c.NumHiddenLayers > o.CheckpointEvery
}

// CheckpointSpacing is the checkpoint spacing Fit turns on: about √L, which
// keeps the fewest residual buffers (about L/k checkpoints + k-1 shared).
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
		if start == 0 && m.Opt.sharedEnds(m.Config) {
			m.embed(bt) // res[0] held the last stream meanwhile
		}
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
	if m.LayerBackwardDone != nil {
		m.LayerBackwardDone(l)
	}
}
