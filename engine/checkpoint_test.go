package engine

import (
	"fmt"
	"testing"
)

// The residual checkpoint plans never let two live streams share a buffer:
// in the forward pass a layer's output goes neither to its input's buffer
// nor to a checkpoint's that is kept, and in the backward pass each
// segment's streams take distinct buffers that no live checkpoint holds,
// its first stream in its own checkpoint's; segments are at most k layers,
// the buffers fewer than L+1, and Fit's spacing takes 5 buffers for 16
// layers and 7 for 32.
func TestResidualPlans(t *testing.T) {
	for L := 2; L <= 40; L++ {
		c := &Config{NumHiddenLayers: L}
		for k := 2; k <= L; k++ {
			p, ok := Options{Recompute: true, CheckpointEvery: k}.residualPlan(c)
			if !ok {
				t.Fatalf("L=%d k=%d: no plan", L, k)
			}
			if err := checkPlan(p, L, k); err != nil {
				t.Errorf("L=%d k=%d, plan %+v: %v", L, k, p, err)
			}
		}
	}
	for L, want := range map[int]int{16: 5, 32: 7, 2: 2} {
		c := &Config{NumHiddenLayers: L}
		if got := (Options{Recompute: true, CheckpointEvery: c.CheckpointSpacing()}).residualBuffers(c); got != want {
			t.Errorf("L=%d: spacing %d takes %d buffers, want %d", L, c.CheckpointSpacing(), got, want)
		}
	}
}

func checkPlan(p residualPlan, L, k int) error {
	m := len(p.ends) - 1
	if p.ends[0] != 0 || p.ends[m] != L || p.bufs > L+1 || p.bufs < 2 {
		return fmt.Errorf("bad ends or buffer count")
	}
	isCkpt := map[int]bool{}
	for i := 1; i < m; i++ {
		isCkpt[p.ends[i]] = true
	}
	fw := p.forwardSlots()
	kept := map[int]bool{} // buffers holding a checkpoint written so far
	for l := 0; l < L; l++ {
		in, out := fw[l], fw[l+1]
		if in == out || kept[out] || out >= p.bufs {
			return fmt.Errorf("forward layer %d: %d → %d (kept %v)", l, in, out, kept)
		}
		if isCkpt[l+1] {
			kept[out] = true
		}
	}
	for j := m; j >= 1; j-- {
		start, end := p.ends[j-1], p.ends[j]
		if end-start > k || end <= start {
			return fmt.Errorf("segment %d is [%d,%d), longer than %d", j, start, end, k)
		}
		slots := p.segmentSlots(j)
		live := map[int]bool{}
		for i := 1; i < j; i++ { // checkpoints e_1..e_(j-1)
			live[fw[p.ends[i]]] = true
		}
		seen := map[int]bool{}
		for i, b := range slots {
			if seen[b] || b >= p.bufs {
				return fmt.Errorf("segment %d: buffer %d twice or out of range (%v)", j, b, slots)
			}
			seen[b] = true
			if i == 0 && j > 1 {
				if b != fw[start] {
					return fmt.Errorf("segment %d starts in buffer %d, its checkpoint is in %d", j, b, fw[start])
				}
				continue
			}
			if live[b] {
				return fmt.Errorf("segment %d: stream %d in buffer %d, which holds a live checkpoint", j, start+i, b)
			}
		}
	}
	return nil
}
