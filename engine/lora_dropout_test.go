package engine_test

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"hone/engine"
)

// loraDropoutCase loads the gqa_packed LoRA fixture on the reference device
// with the adapter's dropout set to p.
func loraDropoutCase(t *testing.T, p float64, opt engine.Options) (*engine.Model, *engine.Adapter, *engine.Batch) {
	return loraDropoutCaseOf(t, "gqa_packed", p, opt)
}

func loraDropoutCaseOf(t *testing.T, name string, p float64, opt engine.Options) (*engine.Model, *engine.Adapter, *engine.Batch) {
	m, a := loadLoRA(t, openDevice(t, "ref"), name, opt)
	a.Config.Dropout = p
	bt := readBatch(t, filepath.Join("testdata", "lora", name, "batch.json"), m.Config.VocabSize)
	return m, a, bt
}

func dropoutPass(m *engine.Model, a *engine.Adapter, bt *engine.Batch, seed uint64) (float64, []float32) {
	a.ZeroGrad()
	sum, _ := m.ForwardBackwardDropout(bt, 1/float32(bt.Scored()), seed)
	return sum, slices.Clone(engine.HostView(a.Device(), a.Grads))
}

// With dropout 0 the training pass is the exact pass, bit for bit.
func TestLoRADropoutZeroIsExact(t *testing.T) {
	m, a, bt := loraDropoutCase(t, 0, engine.Options{})
	a.ZeroGrad()
	want, _ := m.ForwardBackward(bt, 1/float32(bt.Scored()))
	wantG := slices.Clone(engine.HostView(a.Device(), a.Grads))
	got, gotG := dropoutPass(m, a, bt, 42)
	if got != want || !slices.Equal(gotG, wantG) {
		t.Fatalf("dropout 0: loss %v, want %v; gradients equal %v", got, want, slices.Equal(gotG, wantG))
	}
}

// Dropout masks are a function of the seed alone: the same seed gives the
// same loss and gradients (with or without activation recomputation, which
// runs each layer's forward twice, and with the MLP in chunks), another
// seed others; Evaluate never drops.
func TestLoRADropoutDeterministic(t *testing.T) {
	m, a, bt := loraDropoutCase(t, 0.3, engine.Options{})
	evalBefore := m.Evaluate(bt)
	l1, g1 := dropoutPass(m, a, bt, 7)
	l2, g2 := dropoutPass(m, a, bt, 7)
	l3, _ := dropoutPass(m, a, bt, 8)
	if l1 != l2 || !slices.Equal(g1, g2) {
		t.Errorf("seed 7 twice: losses %v and %v, gradients equal %v", l1, l2, slices.Equal(g1, g2))
	}
	if l3 == l1 {
		t.Errorf("seeds 7 and 8 gave the same loss %v: the masks do not depend on the seed", l1)
	}
	if e := m.Evaluate(bt); e != evalBefore {
		t.Errorf("Evaluate after dropout passes %+v, before %+v", e, evalBefore)
	}
	a.ZeroGrad()
	exact, _ := m.ForwardBackward(bt, 1/float32(bt.Scored()))
	if exact == l1 {
		t.Errorf("dropout 0.3 left the loss at the exact %v", exact)
	}
	if e := m.Evaluate(bt); e != evalBefore {
		t.Errorf("Evaluate with dropout configured %+v, want the exact %+v", e, evalBefore)
	}

	for _, opt := range []engine.Options{{Recompute: true}, {Recompute: true, MLPChunk: 5}} {
		// MLPChunk 5: the MLP runs 5 of the 24 rows at a time, each chunk
		// drawing its rows' masks.
		mr, ar, _ := loraDropoutCase(t, 0.3, opt)
		lr, gr := dropoutPass(mr, ar, bt, 7)
		if math.Abs(lr-l1) > 1e-9*math.Abs(l1) || relErr(gr, g1) > 1e-6 {
			t.Errorf("with recomputation, MLP chunk %d: loss %v (want %v), gradient relative error %.3g", opt.MLPChunk, lr, l1, relErr(gr, g1))
		}
	}
}

// The gradient under dropout is the gradient of the dropped loss: checked
// per adapter tensor against central finite differences of the loss
// (forward only) along that tensor's gradient, with the masks fixed by
// the seed; on Llama, on Mixtral's experts and router (rows gathered per
// expert), and on DBRX's clamped Wqkv.
func TestLoRADropoutGradientFiniteDifference(t *testing.T) {
	for _, name := range []string{"gqa_packed", "mixtral_experts", "dbrx_qkv_clip"} {
		t.Run(name, func(t *testing.T) { checkDropoutFiniteDifference(t, name) })
	}
}

func checkDropoutFiniteDifference(t *testing.T, name string) {
	m, a, bt := loraDropoutCaseOf(t, name, 0.3, engine.Options{})
	const seed = 11
	eps := 1e-2
	if name != "gqa_packed" {
		eps = 1e-3 // routing and the clamp are piecewise: a small step crosses fewer of their kinks
	}
	_, g := dropoutPass(m, a, bt, seed)
	p0 := slices.Clone(engine.HostView(a.Device(), a.Params))
	defer a.Device().Upload(a.Params, p0)
	for _, s := range a.Specs {
		gs := g[s.Offset : s.Offset+s.Size()]
		var norm float64
		for _, v := range gs {
			norm += float64(v) * float64(v)
		}
		if norm = math.Sqrt(norm); norm == 0 {
			continue
		}
		loss := func(eps float64) float64 {
			p := slices.Clone(p0)
			for i, v := range gs {
				p[s.Offset+i] += float32(eps * float64(v) / norm)
			}
			a.Device().Upload(a.Params, p)
			sum, _ := m.ForwardBackwardDropout(bt, 1/float32(bt.Scored()), seed)
			return sum / float64(bt.Scored())
		}
		if fd := (loss(eps) - loss(-eps)) / (2 * eps); math.Abs(fd-norm) > 0.02*norm {
			t.Errorf("%s: directional derivative by finite differences %.6g, by the gradient %.6g", s.Name, fd, norm)
		}
	}
}
