package optim_test

import (
	"math"
	"testing"

	"hone/optim"
)

// Shards stepped with StepRange, split anywhere (here mid-tensor), update
// their ranges by the analytic first step, decay groups and clipping
// (by the whole gradient's norm) included.
func TestStepRangeShardsTheAnalyticStep(t *testing.T) {
	m := tinyModel(t)
	for i := range m.Grads.Arena {
		m.Grads.Arena[i] = float32(math.Sin(float64(i))) * 1e-3
	}
	before := append([]float32(nil), m.Params.Arena...)
	grads := append([]float32(nil), m.Grads.Arena...)
	cfg := optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, MaxGradNorm: 1e-3}
	n := len(m.Params.Arena)
	norm := m.GradNorm()
	clip := 1.0
	if norm > cfg.MaxGradNorm {
		clip = cfg.MaxGradNorm / (norm + 1e-6)
	}
	const lr = 1e-2
	cuts := []int{0, n/3 + 5, 2*n/3 - 7, n}
	for k := 0; k+1 < len(cuts); k++ {
		lo, hi := cuts[k], cuts[k+1]
		o, err := optim.NewAdamWRange(m.Dev, m.Config.ParamSpecs(), lo, hi, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(o.M) != hi-lo {
			t.Fatalf("shard [%d,%d) holds %d moments", lo, hi, len(o.M))
		}
		if _, err := o.StepRange(m.Dev, m.Params.Arena[lo:hi], m.Grads.Arena[lo:hi], norm, lr); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range m.Config.ParamSpecs() {
		for i := s.Offset; i < s.Offset+s.Size(); i++ {
			p, g := float64(before[i]), float64(grads[i])*clip
			wd := 0.0
			if s.Decay {
				wd = cfg.WeightDecay
			}
			want := p*(1-lr*wd) - lr*g/(math.Abs(g)+cfg.Eps)
			if got := float64(m.Params.Arena[i]); math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("%s[%d] after one sharded step = %.9g, want %.9g", s.Name, i-s.Offset, got, want)
			}
		}
	}
}
