package optim_test

import (
	"encoding/json"
	"math"
	"os"
	"slices"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/optim"
)

// adamwFixture is optim/testdata/adamw.json, written by
// tools/reference/adamw_reference.py with torch.optim.AdamW.
type adamwFixture struct {
	Config json.RawMessage `json:"config"`
	AdamW  struct {
		LR          float64 `json:"lr"`
		Beta1       float64 `json:"beta1"`
		Beta2       float64 `json:"beta2"`
		Eps         float64 `json:"eps"`
		WeightDecay float64 `json:"weight_decay"`
		MaxGradNorm float64 `json:"max_grad_norm"`
	} `json:"adamw"`
	Schedule struct {
		TotalSteps  int     `json:"total_steps"`
		WarmupSteps int     `json:"warmup_steps"`
		Decay       string  `json:"decay"`
		FinalMult   float64 `json:"final_mult"`
	} `json:"schedule"`
	Params []struct {
		Name  string    `json:"name"`
		Shape []int     `json:"shape"`
		Decay bool      `json:"decay"`
		Init  []float64 `json:"init"`
	} `json:"params"`
	Steps []struct {
		LR       float64              `json:"lr"`
		GradNorm float64              `json:"grad_norm"`
		Clipped  bool                 `json:"clipped"`
		Grads    map[string][]float64 `json:"grads"`
		Params   map[string][]float64 `json:"params"`
		ExpAvg   map[string][]float64 `json:"exp_avg"`
		ExpAvgSq map[string][]float64 `json:"exp_avg_sq"`
	} `json:"steps"`
}

// TestAdamWMatchesTorch runs the fixture's steps (warmup then decay, weight
// decay on matrices only, clipping on some steps) and compares the
// parameters after every step, and the moments after the last, with
// torch.optim.AdamW's float64 results. From step 2 on the update depends on
// the accumulated moments and the bias corrections, which a one-step check
// cannot see.
func TestAdamWMatchesTorch(t *testing.T) {
	fx := loadAdamWFixture(t)
	cfg, err := engine.ParseConfig(fx.Config)
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(cfg, cpu.New(1), engine.Options{})
	specs := fixtureSpecs(t, fx, m)
	for i, p := range fx.Params {
		s := specs[i]
		for j, v := range p.Init {
			m.Params.Arena[s.Offset+j] = float32(v)
		}
	}
	m.ParamsChanged()
	a := fx.AdamW
	o, err := optim.NewAdamW(m, optim.AdamWConfig{Beta1: a.Beta1, Beta2: a.Beta2, Eps: a.Eps, WeightDecay: a.WeightDecay, MaxGradNorm: a.MaxGradNorm})
	if err != nil {
		t.Fatal(err)
	}
	sched := optim.Schedule{Peak: a.LR, TotalSteps: fx.Schedule.TotalSteps, WarmupSteps: fx.Schedule.WarmupSteps,
		Decay: fx.Schedule.Decay, FinalMult: fx.Schedule.FinalMult}
	if err := sched.Validate(); err != nil {
		t.Fatal(err)
	}
	for k, st := range fx.Steps {
		if lr := sched.LR(k); math.Abs(lr-st.LR) > 1e-15 {
			t.Fatalf("step %d: Schedule.LR = %.17g, torch reference %.17g", k, lr, st.LR)
		}
		for i, p := range fx.Params {
			for j, g := range st.Grads[p.Name] {
				m.Grads.Arena[specs[i].Offset+j] = float32(g)
			}
		}
		res, err := o.Step(m, sched.LR(k))
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(res.GradNorm-st.GradNorm) > 1e-6*st.GradNorm || res.Clipped != st.Clipped {
			t.Fatalf("step %d: grad norm %.9g clipped %v, torch %.9g clipped %v", k, res.GradNorm, res.Clipped, st.GradNorm, st.Clipped)
		}
		// float32 kernels against float64 torch: a few ulps of |p| <= ~2
		// plus the update's rounding; a wrong moment or bias correction is
		// off by ~lr (1e-3..1e-2).
		compareArena(t, k, "parameter", fx, specs, m.Params.Arena, st.Params, 1e-6)
		if st.ExpAvg != nil {
			compareArena(t, k, "exp_avg", fx, specs, o.M, st.ExpAvg, 1e-7)
			compareArena(t, k, "exp_avg_sq", fx, specs, o.V, st.ExpAvgSq, 1e-8)
		}
	}
}

func loadAdamWFixture(t *testing.T) *adamwFixture {
	t.Helper()
	b, err := os.ReadFile("testdata/adamw.json")
	if err != nil {
		t.Fatal(err)
	}
	var fx adamwFixture
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatalf("testdata/adamw.json: %v", err)
	}
	if len(fx.Steps) < 5 {
		t.Fatalf("testdata/adamw.json: %d steps, want at least 5", len(fx.Steps))
	}
	return &fx
}

// fixtureSpecs matches the fixture's parameters to m's, one for one, and
// checks the engine decays exactly the ones torch's decay group holds.
func fixtureSpecs(t *testing.T, fx *adamwFixture, m *engine.Model) []engine.ParamSpec {
	t.Helper()
	all := m.Config.ParamSpecs()
	if len(all) != len(fx.Params) {
		t.Fatalf("model has %d parameters, fixture %d", len(all), len(fx.Params))
	}
	specs := make([]engine.ParamSpec, len(fx.Params))
	for i, p := range fx.Params {
		k := slices.IndexFunc(all, func(s engine.ParamSpec) bool { return s.Name == p.Name })
		if k < 0 {
			t.Fatalf("fixture parameter %s is not in the model", p.Name)
		}
		s := all[k]
		if !slices.Equal(s.Shape, p.Shape) || s.Decay != p.Decay || len(p.Init) != s.Size() {
			t.Fatalf("%s: model shape %v decay %v, fixture shape %v decay %v (%d values)", p.Name, s.Shape, s.Decay, p.Shape, p.Decay, len(p.Init))
		}
		specs[i] = s
	}
	return specs
}

func compareArena(t *testing.T, step int, what string, fx *adamwFixture, specs []engine.ParamSpec, arena []float32, want map[string][]float64, tol float64) {
	t.Helper()
	for i, p := range fx.Params {
		w := want[p.Name]
		if len(w) != specs[i].Size() {
			t.Fatalf("step %d: fixture %s of %s has %d values, want %d", step, what, p.Name, len(w), specs[i].Size())
		}
		for j, wv := range w {
			got := float64(arena[specs[i].Offset+j])
			if math.Abs(got-wv) > tol*math.Max(1, math.Abs(wv)) {
				t.Fatalf("step %d: %s %s[%d] = %.9g, reference %.9g (decay %v)", step, what, p.Name, j, got, wv, p.Decay)
			}
		}
	}
}
