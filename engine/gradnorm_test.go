package engine_test

import (
	"fmt"
	"math"
	"testing"

	"hone/engine"
)

// The gradient norm fused into a step's last backward pass (FuseGradNorm)
// is the norm of all the step's gradients: held to a float64 sum of squares
// over the whole arena computed here, to 1e-12 relative (the fused sum
// groups the terms per layer, which moves only float64 rounding), with
// gradient accumulation over two micro-batches and with recomputed
// segments, and GradNorm makes no pass of its own. A later pass or ZeroGrad must not leave a stale norm.
func TestFusedGradNorm(t *testing.T) {
	const tol = 1e-12
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []engine.Options{{}, {Recompute: true, CheckpointEvery: 2}, {BF16: true}} {
		t.Run(fmt.Sprintf("%+v", opt), func(t *testing.T) {
			dev := engine.NewTimedDevice(openCPU(t))
			m := engine.New(c, dev, opt)
			defer m.Close()
			m.InitRandom(1)
			a, b := randomBatch(t, 2, 48, c.VocabSize), randomBatch(t, 1, 40, c.VocabSize)
			scale := 1 / float32(a.Scored()+b.Scored())
			want := func() float64 {
				var s float64
				for _, v := range engine.HostView(dev, m.Grads.Arena) {
					s += float64(v) * float64(v)
				}
				return math.Sqrt(s)
			}
			check := func(what string, w float64) {
				t.Helper()
				if got := m.GradNorm(); math.Abs(got-w) > tol*w {
					t.Errorf("%s: GradNorm = %.17g, want %.17g (rel %.3g)", what, got, w, math.Abs(got-w)/w)
				}
			}
			m.ZeroGrad()
			m.ForwardBackward(a, scale)
			m.FuseGradNorm()
			m.ForwardBackward(b, scale)
			w := want()
			if w == 0 {
				t.Fatal("no gradients")
			}
			calls := dev.Calls["SumSquares"]
			check("fused on the last micro-batch", w)
			if dev.Calls["SumSquares"] != calls || calls < c.NumHiddenLayers {
				t.Errorf("SumSquares calls: %d in the fused pass (want one per layer and the rest), %d more in GradNorm (want none)",
					calls, dev.Calls["SumSquares"]-calls)
			}
			m.ForwardBackward(a, scale) // unarmed: adds to the gradients
			check("after a further pass", want())
			m.FuseGradNorm()
			m.ForwardBackward(b, scale)
			m.ZeroGrad()
			if got := m.GradNorm(); got != 0 {
				t.Errorf("after ZeroGrad GradNorm = %g, want 0", got)
			}
		})
	}
}
