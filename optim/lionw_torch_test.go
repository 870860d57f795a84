package optim_test

import (
	"encoding/json"
	"math"
	"os"
	"slices"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/engine/refdev"
	"hone/optim"
)

// lionwFixture is optim/testdata/lionw.json, written by
// tools/reference/lionw_reference.py (DecoupledLionW in float64).
type lionwFixture struct {
	Config json.RawMessage `json:"config"`
	LionW  struct {
		LR          float64 `json:"lr"`
		Beta1       float64 `json:"beta1"`
		Beta2       float64 `json:"beta2"`
		WeightDecay float64 `json:"weight_decay"`
		MaxGradNorm float64 `json:"max_grad_norm"`
	} `json:"lionw"`
	Schedule struct {
		TotalSteps  int     `json:"total_steps"`
		WarmupSteps int     `json:"warmup_steps"`
		Decay       string  `json:"decay"`
		FinalMult   float64 `json:"final_mult"`
	} `json:"schedule"`
	ZeroEvery int          `json:"zero_every"`
	Params    []paramEntry `json:"params"`
	Steps     []struct {
		LR       float64              `json:"lr"`
		GradNorm float64              `json:"grad_norm"`
		Clipped  bool                 `json:"clipped"`
		Grads    map[string][]float64 `json:"grads"`
		Params   map[string][]float64 `json:"params"`
		ExpAvg   map[string][]float64 `json:"exp_avg"`
	} `json:"steps"`
}

type paramEntry = struct {
	Name  string    `json:"name"`
	Shape []int     `json:"shape"`
	Decay bool      `json:"decay"`
	Init  []float64 `json:"init"`
}

// TestLionWMatchesReference runs the fixture's five steps (warmup then
// decay, clipping on some, decay on matrices only scaled by lr/peak, zero
// gradients on step 0 so sign(0) = 0 matters) on the CPU device and the
// reference device, and compares the parameters and the moment after
// every step with the float64 reference within 1e-6 relative. A sign flip
// or a decay scaled by lr instead of lr/peak is off by ~1e-3 or more.
func TestLionWMatchesReference(t *testing.T) {
	b, err := os.ReadFile("testdata/lionw.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx lionwFixture
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatalf("testdata/lionw.json: %v", err)
	}
	if len(fx.Steps) < 5 || fx.ZeroEvery == 0 {
		t.Fatalf("testdata/lionw.json: %d steps, zero_every %d; want 5 steps with zeroed gradients", len(fx.Steps), fx.ZeroEvery)
	}
	cfg, err := engine.ParseConfig(fx.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, dev := range []struct {
		name string
		d    engine.Device
	}{{"cpu", cpu.New(1)}, {"refdev", refdev.New()}} {
		t.Run(dev.name, func(t *testing.T) {
			m := engine.New(cfg, dev.d, engine.Options{})
			// The fixture's layout is the AdamW fixture's: reuse its checks.
			afx := &adamwFixture{Config: fx.Config}
			for _, p := range fx.Params {
				afx.Params = append(afx.Params, p)
			}
			specs := fixtureSpecs(t, afx, m)
			// The arenas live on the device: fill them through host copies.
			upload := func(dst []float32, vals func(name string) []float64) {
				host := make([]float32, len(dst))
				for i, p := range fx.Params {
					for j, v := range vals(p.Name) {
						host[specs[i].Offset+j] = float32(v)
					}
				}
				engine.FillDevice(dev.d, dst, func(h []float32) error { copy(h, host); return nil })
			}
			upload(m.Params.Arena, func(name string) []float64 {
				return fx.Params[slices.IndexFunc(fx.Params, func(p paramEntry) bool { return p.Name == name })].Init
			})
			m.ParamsChanged()
			l := fx.LionW
			o, err := optim.NewLionW(m, optim.LionWConfig{Beta1: l.Beta1, Beta2: l.Beta2, WeightDecay: l.WeightDecay, MaxGradNorm: l.MaxGradNorm}, l.LR)
			if err != nil {
				t.Fatal(err)
			}
			if len(o.State()) != 1 || len(o.M) != len(m.Params.Arena) {
				t.Fatalf("LionW state: %d buffers, moment of %d values; want one of %d", len(o.State()), len(o.M), len(m.Params.Arena))
			}
			sched := optim.Schedule{Peak: l.LR, TotalSteps: fx.Schedule.TotalSteps, WarmupSteps: fx.Schedule.WarmupSteps,
				Decay: fx.Schedule.Decay, FinalMult: fx.Schedule.FinalMult}
			zeros := 0
			for k, st := range fx.Steps {
				if lr := sched.LR(k); math.Abs(lr-st.LR) > 1e-15 {
					t.Fatalf("step %d: Schedule.LR = %.17g, reference %.17g", k, lr, st.LR)
				}
				upload(m.Grads.Arena, func(name string) []float64 { return st.Grads[name] })
				for _, gs := range st.Grads {
					for _, g := range gs {
						if k == 0 && g == 0 {
							zeros++
						}
					}
				}
				res, err := o.Step(m, sched.LR(k))
				if err != nil {
					t.Fatal(err)
				}
				if math.Abs(res.GradNorm-st.GradNorm) > 1e-6*st.GradNorm || res.Clipped != st.Clipped {
					t.Fatalf("step %d: grad norm %.9g clipped %v, reference %.9g clipped %v", k, res.GradNorm, res.Clipped, st.GradNorm, st.Clipped)
				}
				compareArena(t, k, "parameter", afx, specs, engine.HostView(dev.d, m.Params.Arena), st.Params, 1e-6)
				compareArena(t, k, "exp_avg", afx, specs, engine.HostView(dev.d, o.M), st.ExpAvg, 1e-7)
			}
			if zeros == 0 {
				t.Fatal("fixture step 0 has no zero gradients")
			}
		})
	}
}

// With zero gradients and a zero moment, sign(0) = 0: LionW moves a
// parameter only by its decay, where a sign with sign(0) = ±1 would move
// every one by lr.
func TestLionWSignOfZero(t *testing.T) {
	m := tinyModel(t)
	before := append([]float32(nil), m.Params.Arena...)
	m.ZeroGrad()
	o, err := optim.NewLionW(m, optim.LionWConfig{Beta1: 0.9, Beta2: 0.99}, 1e-2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Step(m, 1e-2); err != nil {
		t.Fatal(err)
	}
	for i := range before {
		if before[i] != m.Params.Arena[i] {
			t.Fatalf("parameter %d moved from %v to %v with a zero gradient and no decay", i, before[i], m.Params.Arena[i])
		}
	}
}

// In BF16 mode LionW writes the bf16 copy of each weight as it updates it
// (the p16 argument): training with that persistent copy must give the
// same bits as per-layer conversion, which never reads a stale copy, and
// the weights must move.
func TestLionWBF16MatchesCompact(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{"vocab_size": 48, "hidden_size": 32, "intermediate_size": 64,
		"num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5}`))
	if err != nil {
		t.Fatal(err)
	}
	ids := [][]int{{1, 5, 9, 13, 17, 21, 25, 29}, {2, 3, 5, 7, 11, 13, 17, 19}}
	var arenas [][]float32
	var start []float32
	for _, opt := range []engine.Options{{BF16: true}, {BF16: true, CompactBF16: true}} {
		m := engine.New(c, cpu.New(0), opt)
		m.InitRandom(3)
		start = append([]float32(nil), m.Params.Arena...)
		bt, _ := engine.NewBatch(ids, ids, nil, c.VocabSize)
		o, err := optim.NewLionW(m, optim.LionWConfig{Beta1: 0.9, Beta2: 0.99, WeightDecay: 0.01, MaxGradNorm: 1}, 1e-2)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ {
			m.ZeroGrad()
			m.ForwardBackward(bt, 1/float32(bt.Scored()))
			if _, err := o.Step(m, 1e-2); err != nil {
				t.Fatal(err)
			}
		}
		arenas = append(arenas, m.Params.Arena)
	}
	if slices.Equal(arenas[0], start) {
		t.Fatal("LionW did not move the weights")
	}
	for i := range arenas[0] {
		if math.Float32bits(arenas[0][i]) != math.Float32bits(arenas[1][i]) {
			t.Fatalf("parameter %d = %v with the persistent bf16 copy, %v with per-layer conversion", i, arenas[0][i], arenas[1][i])
		}
	}
}
