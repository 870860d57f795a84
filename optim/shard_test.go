package optim_test

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/optim"
)

// Shards stepped with StepRanges, split anywhere (here mid-tensor), update
// their ranges by the analytic first step, decay groups and clipping
// (by the whole gradient's norm) included.
func TestStepRangesShardTheAnalyticStep(t *testing.T) {
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
		o, err := optim.NewAdamWRanges(m.Dev, m.Config.ParamSpecs(), [][2]int{{lo, hi}}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(o.M) != hi-lo {
			t.Fatalf("shard [%d,%d) holds %d moments", lo, hi, len(o.M))
		}
		if _, err := o.StepRanges(m.Dev, m.Params.Arena, m.Grads.Arena, nil, norm, lr); err != nil {
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

// LionW stepped in shards (three ranks' NewLionWRanges, several ranges
// each, cut mid-tensor, as dataparallel.Zero1 cuts them) takes, bit for
// bit, the steps of one unsharded LionW: fp32 weights, the bf16 copy and
// the moment, over four steps with decay (scaled by lr/peak) and
// clipping by the whole gradient's norm on some of them. Every element
// is updated by exactly one shard: a range stepped twice or skipped, or
// a decay group cut at the wrong place, would differ.
func TestLionWRangesMatchUnsharded(t *testing.T) {
	for _, bf16 := range []bool{false, true} {
		t.Run(fmt.Sprintf("bf16-%v", bf16), func(t *testing.T) {
			c, err := engine.ParseConfig([]byte(`{"vocab_size": 48, "hidden_size": 32, "intermediate_size": 64,
				"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5}`))
			if err != nil {
				t.Fatal(err)
			}
			dev := cpu.New(1)
			ref, sh := engine.New(c, dev, engine.Options{BF16: bf16}), engine.New(c, dev, engine.Options{BF16: bf16})
			ref.InitRandom(7)
			sh.InitRandom(7)
			cfg := optim.LionWConfig{Beta1: 0.9, Beta2: 0.99, WeightDecay: 0.2, MaxGradNorm: 0.05}
			const peak = 1e-2
			o, err := optim.NewLionW(ref, cfg, peak)
			if err != nil {
				t.Fatal(err)
			}
			n := len(sh.Params.Arena)
			cuts := []int{0, 101, n/4 + 3, n/2 - 1, n/2 + 17, 3*n/4 + 5, n - 9, n}
			var shards []*optim.LionW
			for q := range 3 { // rank q takes every third range
				var ranges [][2]int
				for k := q; k+1 < len(cuts); k += 3 {
					ranges = append(ranges, [2]int{cuts[k], cuts[k+1]})
				}
				s, err := optim.NewLionWRanges(dev, c.ParamSpecs(), ranges, cfg, peak)
				if err != nil {
					t.Fatal(err)
				}
				shards = append(shards, s)
			}
			for step, scale := range []float32{1e-3, 1, 1e-3, 1} { // scale 1 clips
				for i := range n {
					g := scale * float32(math.Sin(float64(i*(step+3))))
					if i%17 == 0 {
						g = 0 // sign(0) = 0: only the decay moves it
					}
					ref.Grads.Arena[i], sh.Grads.Arena[i] = g, g
				}
				lr := peak * float64(4-step) / 4
				want, err := o.Step(ref, lr)
				if err != nil {
					t.Fatal(err)
				}
				norm := sh.GradNorm()
				for q, s := range shards {
					got, err := s.StepRanges(dev, sh.Params.Arena, sh.Grads.Arena, sh.LowPrecisionParams(), norm, lr)
					if err != nil {
						t.Fatal(err)
					}
					if got != want {
						t.Fatalf("step %d, shard %d: %+v, unsharded %+v", step+1, q, got, want)
					}
				}
				if !bf16 {
					sh.ParamsChanged()
				}
				for i, x := range ref.Params.Arena {
					if y := sh.Params.Arena[i]; math.Float32bits(x) != math.Float32bits(y) {
						t.Fatalf("step %d: weight %d is %v sharded, %v unsharded", step+1, i, y, x)
					}
				}
				if !slices.Equal(ref.LowPrecisionParams(), sh.LowPrecisionParams()) {
					t.Fatalf("step %d: the bf16 copies differ", step+1)
				}
			}
			for q, s := range shards {
				at := 0
				for k := q; k+1 < len(cuts); k += 3 {
					for i := cuts[k]; i < cuts[k+1]; i++ {
						if x, y := o.M[i], s.M[at+i-cuts[k]]; math.Float32bits(x) != math.Float32bits(y) {
							t.Fatalf("moment %d is %v in shard %d, %v unsharded", i, y, q, x)
						}
					}
					at += cuts[k+1] - cuts[k]
				}
				if at != len(s.M) {
					t.Fatalf("shard %d holds %d moments, its ranges %d", q, len(s.M), at)
				}
			}
		})
	}
}

// UpdateFirst moves one range to the front of every step, telling done of
// it first, and changes no result: AdamW and LionW, bit for bit.
func TestUpdateFirst(t *testing.T) {
	for _, name := range []string{"adamw", "lionw"} {
		t.Run(name, func(t *testing.T) {
			var params, moment [2][]float32
			var dones [2][]int
			for v := range 2 {
				m := tinyModel(t)
				for i := range m.Grads.Arena {
					m.Grads.Arena[i] = float32(math.Sin(float64(i))) * 1e-3
				}
				n := len(m.Params.Arena)
				ranges := [][2]int{{0, n/3 + 5}, {n/3 + 5, 2*n/3 - 7}, {2*n/3 - 7, n}}
				newOpt := optim.AdamWRanges(optim.DefaultAdamW)
				if name == "lionw" {
					newOpt = optim.LionWRanges(optim.DefaultLionW, 1e-2)
				}
				o, err := newOpt(m.Dev, m.Config.ParamSpecs(), ranges)
				if err != nil {
					t.Fatal(err)
				}
				if v == 1 {
					o.UpdateFirst(1)
				}
				for range 2 {
					if _, err := o.StepRangesEach(m.Dev, m.Params.Arena, m.Grads.Arena, nil, m.GradNorm(), 1e-2,
						func(k int) { dones[v] = append(dones[v], k) }); err != nil {
						t.Fatal(err)
					}
				}
				params[v] = m.Params.Arena
				moment[v] = o.State()[0].Buf
			}
			if want := []int{1, 0, 2, 1, 0, 2}; !slices.Equal(dones[1], want) {
				t.Errorf("ranges done in order %v, want %v", dones[1], want)
			}
			for v, want := range [][]float32{params[0], moment[0]} {
				got := [][]float32{params[1], moment[1]}[v]
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("element %d of %s differs: %g updated range 1 first, %g in order", i, []string{"the parameters", "the first moment"}[v], got[i], want[i])
					}
				}
			}
		})
	}
}
