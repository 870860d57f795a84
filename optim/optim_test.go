package optim_test

import (
	"math"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/optim"
)

func tinyModel(t *testing.T) *engine.Model {
	t.Helper()
	c, err := engine.ParseConfig([]byte(`{"vocab_size": 48, "hidden_size": 32, "intermediate_size": 64,
		"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5}`))
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(c, cpu.New(0), engine.Options{})
	m.InitRandom(7)
	return m
}

// The first AdamW step has m̂ = g and v̂ = g², so each parameter moves by
// exactly lr·g/(|g|+eps) after decoupled decay p·(1 − lr·wd): worked out by
// hand, independent of the kernel.
func TestAdamWFirstStepAnalytic(t *testing.T) {
	m := tinyModel(t)
	for i := range m.Grads.Arena {
		m.Grads.Arena[i] = float32(math.Sin(float64(i))) * 1e-3
	}
	before := append([]float32(nil), m.Params.Arena...)
	grads := append([]float32(nil), m.Grads.Arena...)
	cfg := optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	o, err := optim.NewAdamW(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const lr = 1e-2
	if _, err := o.Step(m, lr); err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Config.ParamSpecs() {
		for i := s.Offset; i < s.Offset+s.Size(); i++ {
			p, g := float64(before[i]), float64(grads[i])
			wd := 0.0
			if s.Decay {
				wd = cfg.WeightDecay
			}
			want := p*(1-lr*wd) - lr*g/(math.Abs(g)+cfg.Eps)
			if got := float64(m.Params.Arena[i]); math.Abs(got-want) > 1e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("%s[%d] after one step = %.9g, want %.9g (p %.6g g %.3g decay %v)", s.Name, i-s.Offset, got, want, p, g, s.Decay)
			}
		}
	}
}

func TestClipping(t *testing.T) {
	m := tinyModel(t)
	for i := range m.Grads.Arena {
		m.Grads.Arena[i] = 1
	}
	o, _ := optim.NewAdamW(m, optim.AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, MaxGradNorm: 0.5})
	res, err := o.Step(m, 1e-3)
	if err != nil {
		t.Fatal(err)
	}
	wantNorm := math.Sqrt(float64(len(m.Grads.Arena)))
	if math.Abs(res.GradNorm-wantNorm) > 1e-6*wantNorm || !res.Clipped {
		t.Fatalf("Step: norm %v clipped %v, want %v true", res.GradNorm, res.Clipped, wantNorm)
	}
	// The update saw the clipped gradient: the first moment is (1-β1)·g·0.5/‖g‖.
	want := 0.1 * 0.5 / wantNorm
	for i, mi := range o.M {
		if math.Abs(float64(mi)-want) > 1e-6*want {
			t.Fatalf("exp_avg[%d] = %v after a clipped step, want %v", i, mi, want)
		}
	}
}

func TestNonFiniteGradientSkipsUpdate(t *testing.T) {
	m := tinyModel(t)
	m.Grads.Arena[3] = float32(math.NaN())
	before := append([]float32(nil), m.Params.Arena...)
	o, _ := optim.NewAdamW(m, optim.DefaultAdamW)
	if _, err := o.Step(m, 1e-3); err == nil {
		t.Fatal("Step with a NaN gradient returned no error")
	}
	for i := range before {
		if before[i] != m.Params.Arena[i] {
			t.Fatalf("parameter %d changed after a skipped step", i)
		}
	}
}

func TestSchedule(t *testing.T) {
	lin := optim.Schedule{Peak: 1, TotalSteps: 100, WarmupSteps: 2}
	cos := optim.Schedule{Peak: 2, TotalSteps: 10, WarmupSteps: 0, Decay: "cosine", FinalMult: 0.1}
	for _, tc := range []struct {
		s    optim.Schedule
		i    int
		want float64
	}{
		{lin, 0, 0.5}, {lin, 1, 1}, {lin, 2, 1}, {lin, 51, 0.5}, {lin, 100, 0},
		{cos, 0, 2}, {cos, 5, 2 * (0.1 + 0.9*0.5)}, {cos, 10, 0.2},
	} {
		if got := tc.s.LR(tc.i); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%+v.LR(%d) = %v, want %v", tc.s, tc.i, got, tc.want)
		}
	}
	for _, bad := range []optim.Schedule{{Peak: 0, TotalSteps: 1}, {Peak: 1, TotalSteps: 0}, {Peak: 1, TotalSteps: 1, Decay: "step"}, {Peak: 1, TotalSteps: 1, FinalMult: 2}} {
		if bad.Validate() == nil {
			t.Errorf("%+v.Validate() = nil, want an error", bad)
		}
	}
}

// Fifty AdamW steps on one small batch must drive the loss down by 90% or
// more: the whole forward/backward/update loop has to be right for that.
func TestOverfitSmallBatch(t *testing.T) {
	m := tinyModel(t)
	ids := [][]int{{1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45}, {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37}}
	bt, err := engine.NewBatch(ids, ids, nil, m.Config.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := optim.NewAdamW(m, optim.AdamWConfig{Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, MaxGradNorm: 1})
	sched := optim.Schedule{Peak: 1e-2, TotalSteps: 50, WarmupSteps: 1, FinalMult: 0.1}
	var first, last float64
	for i := 0; i < 50; i++ {
		m.ZeroGrad()
		sum, n := m.ForwardBackward(bt, 1/float32(bt.Scored()))
		loss := sum / float64(n)
		if i == 0 {
			first = loss
		}
		last = loss
		if _, err := o.Step(m, sched.LR(i)); err != nil {
			t.Fatal(err)
		}
	}
	if last > 0.1*first {
		t.Fatalf("loss went from %.4f to %.4f in 50 steps; want a drop of 90%% or more", first, last)
	}
	t.Logf("loss %.4f -> %.4f", first, last)
}

// Compact bf16 (per-layer conversion) must train exactly as the persistent
// bf16 copy does: same bits after several steps, which also checks that no
// stale bf16 weights are ever used after an update.
func TestCompactBF16MatchesPersistent(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{"vocab_size": 48, "hidden_size": 32, "intermediate_size": 64,
		"num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "tie_word_embeddings": true}`))
	if err != nil {
		t.Fatal(err)
	}
	ids := [][]int{{1, 5, 9, 13, 17, 21, 25, 29}, {2, 3, 5, 7, 11, 13, 17, 19}}
	var arenas [][]float32
	for _, opt := range []engine.Options{{BF16: true}, {BF16: true, CompactBF16: true}, {BF16: true, CompactBF16: true, Recompute: true}} {
		m := engine.New(c, cpu.New(0), opt)
		m.InitRandom(3)
		bt, _ := engine.NewBatch(ids, ids, nil, c.VocabSize)
		o, _ := optim.NewAdamW(m, optim.DefaultAdamW)
		for i := 0; i < 4; i++ {
			m.ZeroGrad()
			m.ForwardBackward(bt, 1/float32(bt.Scored()))
			if _, err := o.Step(m, 1e-2); err != nil {
				t.Fatal(err)
			}
		}
		arenas = append(arenas, m.Params.Arena)
	}
	for k := 1; k < len(arenas); k++ {
		for i := range arenas[0] {
			if math.Float32bits(arenas[0][i]) != math.Float32bits(arenas[k][i]) {
				t.Fatalf("variant %d: parameter %d = %v, persistent bf16 gives %v", k, i, arenas[k][i], arenas[0][i])
			}
		}
	}
}
