package engine_test

import (
	"fmt"
	"math"
	"testing"

	"hone/engine"
)

// The gradient norm fused into a step's last backward pass (FuseGradNorm)
// equals the unfused GradNorm of a twin model that ran the same passes, bit
// for bit (same terms, same order: clipping decides alike and resumed runs
// match), and is the norm of all the step's gradients: held to a float64
// sum of squares over the whole arena computed here to 1e-12 relative,
// with gradient accumulation over two micro-batches and with recomputed
// segments. GradNorm then makes no pass of its own, and a later pass or
// ZeroGrad must not leave a stale norm.
func TestFusedGradNorm(t *testing.T) {
	const tol = 1e-12
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []engine.Options{{}, {Recompute: true, CheckpointEvery: 2}, {BF16: true}} {
		t.Run(fmt.Sprintf("%+v", opt), func(t *testing.T) {
			dev := engine.NewTimedDevice(openCPU(t))
			m, twin := engine.New(c, dev, opt), engine.New(c, openCPU(t), opt)
			defer m.Close()
			defer twin.Close()
			m.InitRandom(1)
			twin.InitRandom(1)
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
			for _, x := range []*engine.Model{m, twin} {
				x.ZeroGrad()
				x.ForwardBackward(a, scale)
			}
			m.FuseGradNorm()
			m.ForwardBackward(b, scale)
			twin.ForwardBackward(b, scale)
			w := want()
			if w == 0 {
				t.Fatal("no gradients")
			}
			calls := dev.Calls["SumSquares"]
			if got, unfused := m.GradNorm(), twin.GradNorm(); got != unfused {
				t.Errorf("fused GradNorm %.17g, unfused %.17g: want them equal bit for bit", got, unfused)
			}
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
