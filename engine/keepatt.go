package engine

// Kept attention outputs (Options.KeepAttention, with Recompute).
//
// A layer's attention output att (N,QD) and log-sum-exp lse (B,NH,T) are
// O(T), while computing them is two of the attention's T² products, and
// at long context the attention is most of a step. Recomputation runs the
// attention forward again in the backward pass only for the backward to
// read att and lse (and q, k, v, which are cheap to recompute: three
// products linear in T). Keeping att and lse from the forward pass instead
// lets the recomputation skip the attention: each layer's attention runs
// forward once and backward once, where plain recomputation runs it
// forward twice.
//
// Without residual checkpoints every layer keeps its own slot (L slots;
// fewer with KeepAttentionLayers, below).
// With checkpoints (checkpoint.go) the backward pass runs a segment's
// layers but its last forward once more to rebuild its residual streams,
// and then each layer's recomputation: the slots hold one segment's layers
// (as many slots as the longest segment), written by the forward pass and
// by that re-forward, so the recomputation reuses what the re-forward
// computed. A layer's attention then runs forward at most twice where it
// ran three times (the forward pass, the segment's re-forward, the
// recomputation); the last segment's layers, whose slots the forward pass
// left intact, once.
//
// KeepAttentionLayers k keeps k slots, fewer than the layers (or than a
// segment's), which the layers take in turn: layer l (with checkpoints,
// the l-th of its segment) has slot l mod k. A slot holds the outputs of
// the last layer that ran the attention into it, so after the forward
// pass the slots hold the last k layers', and the backward pass, which
// takes the layers last first, reaches those layers before any other
// writes their slots: they skip the recomputation, and every other layer
// recomputes its attention into its slot as plain recomputation does.
// Which layers keep does not change the saving: every layer's attention
// is the same work (the same tokens, heads, head size and window), so each
// kept layer saves one attention forward, and no choice keeps more than
// one layer a slot. Plain recomputation's one att and lse are a slot's
// size, so k slots cost k-1 slots more than it, and without checkpoints
// plain recomputation takes one slot (KeptAttention): its last layer
// keeps, for nothing. With checkpoints each segment's re-forward leaves
// its last k layers before the segment's last in the slots, and the
// segment's last layer, which the re-forward does not run, recomputes
// into one of them: k-1 of its layers keep (all but its last, as with
// every slot, when the segment has at most k layers), so there plain
// recomputation takes none.
//
// A slot says which layer's outputs on the current batch it holds (-1:
// none): every forward pass over a batch clears them, the attention sets
// them, and a layer's backward pass, which writes ln1 into its slot once
// att is dead, clears its own. A layer's forward runs the attention
// unless its slot holds its outputs, so a slot can never serve another
// layer's, or another batch's.
//
// The slot's buffer is (N, max(C,QD)): att is its first N·QD floats and
// the backward pass normalises ln1 into its first N·C (mid's buffer, where
// the forward passes put ln1, is dq's in the backward pass).
type keptAttention struct {
	buf   []float32 // (N, max(C,QD)): att, then the backward pass's ln1
	att   []float32 // (N,QD), buf's start
	lse   []float32 // (B,NH,T)
	layer int       // the layer whose outputs on this batch it holds; -1 none
}

// keepAttention says the model keeps attention outputs (KeepAttention
// takes effect with Recompute only).
func (o Options) keepAttention() bool { return o.Recompute && o.KeepAttention }

// KeptAttention says whether the recomputation reuses attention outputs
// kept from the forward pass, and of how many layers (0: every layer's; a
// segment's with CheckpointEvery), as KeepAttention and
// KeepAttentionLayers say it. Plain recomputation without checkpoints
// keeps the last layer's: its att and lse are one slot, and a slot holds
// the last layer's outputs when the backward pass starts (one slot a
// segment keeps none).
func (o Options) KeptAttention() (keep bool, layers int) {
	switch {
	case !o.Recompute:
		return false, 0
	case o.KeepAttention:
		return true, o.KeepAttentionLayers
	case o.CheckpointEvery > 1:
		return false, 0
	}
	return true, 1
}

// keptSlots is how many layers' attention outputs the model keeps at
// once (0: none, att and lse are the shared layer entry's): every
// layer's, or with residual checkpoints the longest segment's, at most
// KeptAttention's layers.
func (o Options) keptSlots(c *Config) int {
	keep, k := o.KeptAttention()
	if !keep {
		return 0
	}
	n := c.NumHiddenLayers
	if p, ok := o.residualPlan(c); ok {
		n = 0
		for j := 1; j < len(p.ends); j++ {
			n = max(n, p.ends[j]-p.ends[j-1])
		}
	}
	if k > 0 {
		n = min(n, k)
	}
	return n
}

// keptSlotOf is the slot of each layer among n: its index, or with
// checkpoints its index in its segment, modulo n.
func (o Options) keptSlotOf(c *Config, n int) []int {
	slot := make([]int, c.NumHiddenLayers)
	for l := range slot {
		slot[l] = l % n
	}
	if p, ok := o.residualPlan(c); ok {
		for j := 1; j < len(p.ends); j++ {
			for l := p.ends[j-1]; l < p.ends[j]; l++ {
				slot[l] = (l - p.ends[j-1]) % n
			}
		}
	}
	return slot
}

// allocKept allocates the slots (keptSlots) for N tokens.
func (a *activations) allocKept(d Device, o Options, c *Config, N int) {
	n := o.keptSlots(c)
	if n == 0 {
		return
	}
	a.kept, a.keptOf = make([]keptAttention, n), o.keptSlotOf(c, n)
	W := max(c.HiddenSize, c.QDim())
	for i := range a.kept {
		buf := d.Alloc(N * W)
		a.kept[i] = keptAttention{buf: buf, att: buf[:N*c.QDim()], lse: d.Alloc(N * c.NumAttentionHeads), layer: -1}
	}
}

// freeKept frees the slots.
func (a *activations) freeKept(d Device) {
	for _, s := range a.kept {
		freeAll(d, s.buf, s.lse)
	}
	a.kept = nil
}

// keptFor is layer l's slot, nil where the model keeps none.
func (a *activations) keptFor(l int) *keptAttention {
	if a.kept == nil {
		return nil
	}
	return &a.kept[a.keptOf[l]]
}

// forgetKept clears every slot: a forward pass over a new batch starts.
func (a *activations) forgetKept() {
	for i := range a.kept {
		a.kept[i].layer = -1
	}
}
