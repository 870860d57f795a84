package engine_test

import (
	"fmt"
	"testing"

	"hone/engine"
)

// OverwriteGrads followed by a step's micro-batches leaves the gradients a
// ZeroGrad would, value for value, though the arena held another pass's
// gradients before it: in fp32 and bf16, with recomputed segments and an
// MLP run in chunks (only the first chunk overwrites), and with a first
// micro-batch that scores nothing (the head's gradient is then zeroed, not
// left stale). Zero then runs only over the ranges no product writes.
func TestOverwriteGrads(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	unscored := randomBatch(t, 1, 32, c.VocabSize)
	for i := range unscored.Targets {
		unscored.Targets[i] = -1
	}
	a, b := randomBatch(t, 2, 48, c.VocabSize), randomBatch(t, 1, 40, c.VocabSize)
	for _, opt := range []engine.Options{{}, {Recompute: true, CheckpointEvery: 2, MLPChunk: 16}, {BF16: true}} {
		for _, first := range []*engine.Batch{a, unscored} {
			t.Run(fmt.Sprintf("%+v/scored=%v", opt, first.Scored() > 0), func(t *testing.T) {
				dev := engine.NewTimedDevice(openCPU(t))
				m, twin := engine.New(c, dev, opt), engine.New(c, openCPU(t), opt)
				defer m.Close()
				defer twin.Close()
				m.InitRandom(1)
				twin.InitRandom(1)
				scale := 1 / float32(first.Scored()+b.Scored())
				m.ZeroGrad()
				m.ForwardBackward(b, 0.5) // stale gradients to overwrite
				twin.ZeroGrad()
				dev.Reset()
				m.OverwriteGrads()
				zeroed := 0
				for _, x := range []*engine.Model{m, twin} {
					x.ForwardBackward(first, scale)
					x.ForwardBackward(b, scale)
				}
				if dev.Calls["Zero"] == 0 {
					t.Fatal("OverwriteGrads zeroed nothing (embeddings, norms, biases need it)")
				}
				got, want := engine.HostView(dev, m.Grads.Arena), engine.HostView(twin.Dev, twin.Grads.Arena)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("gradient %d: %g after OverwriteGrads, %g after ZeroGrad", i, got[i], want[i])
					}
					if want[i] == 0 {
						zeroed++
					}
				}
				if zeroed == len(want) {
					t.Fatal("no gradients")
				}
				if m.GradNorm() != twin.GradNorm() {
					t.Errorf("GradNorm %v after OverwriteGrads, %v after ZeroGrad", m.GradNorm(), twin.GradNorm())
				}
			})
		}
	}
}
