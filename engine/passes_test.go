package engine_test

import (
	"slices"
	"strings"
	"testing"

	"hone/engine"
)

// TimedDevice counts streams over tracked buffers by the share of each an
// operand covers, an in-place operand once, untracked memory not at all.
func TestPassCount(t *testing.T) {
	dev := engine.NewTimedDevice(openCPU(t))
	const n = 1000
	g, p, m, v := dev.Alloc(n), dev.Alloc(n), dev.Alloc(n), dev.Alloc(n)
	other := dev.Alloc(n)
	p16 := dev.AllocBF16(n)
	dev.Track("gradients", g)
	dev.Track("weights", p)
	dev.Track("bf16 weights", p16)
	dev.Zero(g)
	dev.SumSquares(g[:n/2])
	dev.SumSquares(g[n/2:])
	dev.Copy(other, other)
	dev.AdamW(p, g, m, v, p16, engine.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 1})
	dev.ToBF16(p16[:n/4], p[:n/4])
	got := dev.PassReport(2)
	want := []string{
		"passes per step over gradients: 1.50 (AdamW 0.50, SumSquares 0.50, Zero 0.50)",
		"passes per step over weights: 0.62 (AdamW 0.50, ToBF16 0.12)",
		"passes per step over bf16 weights: 0.62 (AdamW 0.50, ToBF16 0.12)",
		"passes per step over parameter-sized buffers: 2.75",
	}
	if !slices.Equal(got, want) {
		t.Errorf("PassReport:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	dev.Reset()
	if got := dev.PassReport(1); got[len(got)-1] != "passes per step over parameter-sized buffers: 0.00" {
		t.Errorf("after Reset: %q", got)
	}
}
