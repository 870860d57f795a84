package engine_test

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/engine"
	"hone/safetensors"
)

// loraRun is one LoRA training step's result: loss, logits and adapter
// gradients, on the host.
type loraRun struct {
	loss          float64
	logits, grads []float32
}

func runLoRA(t *testing.T, dev engine.Device, name string, opt engine.Options) loraRun {
	t.Helper()
	m, a := loadLoRA(t, dev, name, opt)
	defer m.Close()
	defer a.Close()
	bt := readBatch(t, filepath.Join("testdata", "lora", name, "batch.json"), m.Config.VocabSize)
	logits := m.Logits(bt)
	a.ZeroGrad()
	sum, n := m.ForwardBackward(bt, 1/float32(bt.Scored()))
	return loraRun{sum / float64(n), logits, slices.Clone(engine.HostView(dev, a.Grads))}
}

// A frozen bf16 base computes what BF16 mode computes on the fp32 master
// weights: on a bf16 checkpoint the weights are the same values, so loss,
// logits and adapter gradients are equal bit for bit; on an fp32 one they
// differ only by the embedding rows' rounding. Both are held to the
// float64 PyTorch reference at the bf16 tolerance of TestLoRABF16AgainstReference.
func TestFrozenBF16LoRAAgainstReference(t *testing.T) {
	const lossTol, tensorTol = 1e-2, 3e-2
	for _, devName := range parityDevices {
		for _, name := range []string{"mistral_bf16_base", "gqa_packed", "tied_llama3_rslora"} {
			for _, opt := range []engine.Options{{FrozenBF16: true}, {FrozenBF16: true, Recompute: true, LossChunk: 5}} {
				t.Run(fmt.Sprintf("%s/%s/recompute=%v", devName, name, opt.Recompute), func(t *testing.T) {
					dev := openDevice(t, devName)
					frozen := runLoRA(t, dev, name, opt)
					mixed := runLoRA(t, dev, name, engine.Options{BF16: true, Recompute: opt.Recompute, LossChunk: opt.LossChunk})
					if name == "mistral_bf16_base" {
						if frozen.loss != mixed.loss || !slices.Equal(frozen.logits, mixed.logits) || !slices.Equal(frozen.grads, mixed.grads) {
							t.Errorf("bf16 checkpoint: frozen bf16 base differs from BF16 mode (loss %v vs %v, logits %.3g, grads %.3g)",
								frozen.loss, mixed.loss, relErr(frozen.logits, mixed.logits), relErr(frozen.grads, mixed.grads))
						}
					}
					checkAgainstFixture(t, name, frozen, lossTol, tensorTol)
				})
			}
		}
	}
}

func checkAgainstFixture(t *testing.T, name string, r loraRun, lossTol, tensorTol float64) {
	t.Helper()
	dir := filepath.Join("testdata", "lora", name)
	lf, err := safetensors.Open(filepath.Join(dir, "logits.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if e := relErr(r.logits, readTensor(t, lf, "logits")); e > tensorTol {
		t.Errorf("logits: relative error %.3g > %g", e, tensorTol)
	}
	gf, err := safetensors.Open(filepath.Join(dir, "grads.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()
	if want := float64(readTensor(t, gf, "loss")[0]); math.Abs(r.loss-want) > lossTol*want {
		t.Errorf("loss = %.6f, reference %.6f", r.loss, want)
	}
	m, err := engine.Load(dir, openCPU(t), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := engine.LoadAdapter(filepath.Join(dir, "adapter"), m)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range a.Specs {
		if e := relErr(r.grads[s.Offset:s.Offset+s.Size()], readTensor(t, gf, s.Name)); e > tensorTol {
			t.Errorf("grad %s: relative error %.3g > %g", s.Name, e, tensorTol)
		}
	}
}

// InitRandom of a frozen bf16 base draws what the fp32 model draws and
// rounds it, so its logits equal BF16 mode's on the same seed with the
// fp32 weights rounded to bf16 (the embedding rows are read in fp32 there).
func TestFrozenBF16InitRandom(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	bt := randomBatch(t, 2, 24, c.VocabSize)
	var logits [][]float32
	for _, opt := range []engine.Options{{FrozenBF16: true}, {BF16: true}} {
		dev := openCPU(t)
		m := engine.New(c, dev, opt)
		m.InitRandom(9)
		if !opt.FrozenBF16 {
			_ = engine.FillDevice(dev, m.Params.Arena, func(p []float32) error {
				for i, v := range p {
					p[i] = safetensors.BF16ToFloat32(safetensors.Float32ToBF16(v))
				}
				return nil
			})
			m.ParamsChanged()
		}
		logits = append(logits, m.Logits(bt))
	}
	if !slices.Equal(logits[0], logits[1]) {
		t.Errorf("frozen bf16 InitRandom differs from BF16 mode's rounded weights (%.3g)", relErr(logits[0], logits[1]))
	}
}

// What a frozen bf16 base cannot do is refused, not done wrong.
func TestFrozenBF16Refuses(t *testing.T) {
	dev := openCPU(t)
	dir := filepath.Join("testdata", "lora", "gqa_packed")
	m, a := loadLoRA(t, dev, "gqa_packed", engine.Options{FrozenBF16: true})
	if err := m.Save(t.TempDir(), engine.SaveOptions{}); err == nil || !strings.Contains(err.Error(), "FrozenBF16") {
		t.Errorf("Save: %v", err)
	}
	if err := m.Merge(a); err == nil || !strings.Contains(err.Error(), "FrozenBF16") {
		t.Errorf("Merge: %v", err)
	}
	if m.LowPrecisionParams() != nil {
		t.Error("LowPrecisionParams hands the frozen base to an optimizer")
	}
	if err := m.Attach(nil); err != nil {
		t.Fatal(err)
	}
	bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Attach") {
			t.Errorf("ForwardBackward without an adapter: %v", r)
		}
	}()
	m.ForwardBackward(bt, 1)
}

// The memory estimate of LoRA training (frozen base, adapter trained with
// AdamW) matches what the model, the adapter and the adapter's optimizer
// allocate through a counting device, as TestMemoryEstimateMatchesAllocations
// does for full fine-tuning. And a frozen base allocates no gradients for
// its weights: right after New, exactly the base's weights (bf16 matrices
// with FrozenBF16, fp32 otherwise) and the small fp32 norms and biases
// with their gradients are live.
func TestLoRAMemoryEstimateMatchesAllocations(t *testing.T) {
	const tol = 0.01
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	P, vec := c.NumParams(), int64(0)
	for _, s := range c.ParamSpecs() {
		if len(s.Shape) == 1 {
			vec += int64(s.Size())
		}
	}
	lora := &engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: engine.LoRATargets}
	qv := &engine.LoRAConfig{Rank: 8, Alpha: 8, Targets: []string{"q_proj", "v_proj"}}
	for _, tc := range []struct {
		opt     engine.Options
		B, T    int
		weights int64 // bytes live after New
	}{
		{engine.Options{FrozenBF16: true, LoRA: lora}, 2, 96, 2*P + 8*vec},
		{engine.Options{FrozenBF16: true, LoRA: qv, Recompute: true, LossChunk: 64}, 3, 80, 2*P + 8*vec},
		{engine.Options{LoRA: lora}, 2, 96, 4*P + 4*vec},
		{engine.Options{LoRA: lora, BF16: true}, 2, 96, 6*P + 4*vec},
		{engine.Options{FrozenBF16: true, LoRA: lora, Recompute: true}, 1, 1536, 2*P + 8*vec}, // blocked attention
	} {
		t.Run(fmt.Sprintf("frozenbf16=%v/bf16=%v/rank%d/B%dT%d", tc.opt.FrozenBF16, tc.opt.BF16, tc.opt.LoRA.Rank, tc.B, tc.T), func(t *testing.T) {
			dev := engine.NewCountingDevice(openCPU(t))
			m := engine.New(c, dev, tc.opt)
			if got := dev.Memory().Live; got != tc.weights {
				t.Errorf("after New %d bytes are live, want %d (base weights, norms and biases with their gradients; no base gradients)", got, tc.weights)
			}
			m.InitRandom(1)
			a, err := engine.NewAdapter(c, dev, *tc.opt.LoRA)
			if err != nil {
				t.Fatal(err)
			}
			a.InitPEFT(2)
			if err := m.Attach(a); err != nil {
				t.Fatal(err)
			}
			mom, vel := dev.Alloc(len(a.Params)), dev.Alloc(len(a.Params)) // the adapter's AdamW moments
			m.Reserve(tc.B, tc.T)
			bt := randomBatch(t, tc.B, tc.T, c.VocabSize)
			a.ZeroGrad()
			m.ForwardBackward(bt, 1/float32(bt.Scored()))
			dev.AdamW(a.Params, a.Grads, mom, vel, nil, engine.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 1})
			scratch := engine.AttentionScratchFor(dev, tc.opt.BF16, tc.B, tc.T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
			actual := dev.Memory().Peak + scratch
			est := c.MemoryEstimate(dev, tc.opt, tc.B, tc.T)
			t.Logf("estimate %d bytes, allocated %d", est, actual)
			if rel := float64(est-actual) / float64(actual); rel > tol || rel < -tol {
				t.Errorf("MemoryEstimate = %d bytes, training allocated %d (peak %d + attention scratch %d): off by %.2f%%",
					est, actual, dev.Memory().Peak, scratch, 100*rel)
			}
		})
	}
}

// Fit turns a LoRA base computed in bf16 into a frozen bf16 base first (it
// costs no time), and refuses an adapter that selects nothing.
func TestFitLoRA(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	dev := openCPU(t)
	lora := &engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: engine.LoRATargets}
	opt := engine.Options{BF16: true, LoRA: lora}
	frozen := opt
	frozen.FrozenBF16 = true
	need := c.MemoryEstimate(dev, frozen, 1, 64)
	avail := need + 2<<30 + 100<<10 // Fit keeps 2 GiB; 100 KiB more than the frozen model needs, 4P bytes less than the fp32 one
	got, notes, err := c.Fit(dev, opt, 1, 64, avail)
	if err != nil || !got.FrozenBF16 || got.Recompute || len(notes) != 1 || !strings.Contains(notes[0], "frozen bf16 base") {
		t.Errorf("Fit = %+v, %v, %v; want only a frozen bf16 base turned on", got, notes, err)
	}
	bad := engine.Options{LoRA: &engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"lm_head"}}}
	if _, _, err := c.Fit(dev, bad, 1, 64, 1<<40); err == nil || !strings.Contains(err.Error(), "lm_head") {
		t.Errorf("Fit with a bad adapter: %v", err)
	}
}

// Load rounds F32 and F16 checkpoints to the bf16 weights that the same
// model saved as BF16 holds: the logits of the two are equal exactly. (The
// norms are made bf16 values first, since a BF16 file rounds them too while
// a frozen bf16 base keeps them fp32.)
func TestFrozenBF16LoadDTypes(t *testing.T) {
	dev := openCPU(t)
	src := filepath.Join("testdata", "lora", "gqa_packed")
	m, err := engine.Load(src, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := engine.HostView(dev, m.Params.Arena)
	for _, s := range m.Config.ParamSpecs() {
		if len(s.Shape) == 1 {
			for i := s.Offset; i < s.Offset+s.Size(); i++ {
				p[i] = safetensors.BF16ToFloat32(safetensors.Float32ToBF16(p[i]))
			}
		}
	}
	bt := readBatch(t, filepath.Join(src, "batch.json"), m.Config.VocabSize)
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.F16} {
		dir := filepath.Join(t.TempDir(), string(dt))
		if err := m.Save(dir, engine.SaveOptions{DType: dt, SourceDir: src}); err != nil {
			t.Fatal(err)
		}
		fp32, err := engine.Load(dir, dev, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		b16 := filepath.Join(t.TempDir(), "bf16")
		if err := fp32.Save(b16, engine.SaveOptions{DType: safetensors.BF16, SourceDir: src}); err != nil {
			t.Fatal(err)
		}
		var logits [][]float32
		for _, d := range []string{dir, b16} {
			fm, err := engine.Load(d, dev, engine.Options{FrozenBF16: true})
			if err != nil {
				t.Fatal(err)
			}
			logits = append(logits, fm.Logits(bt))
		}
		if !slices.Equal(logits[0], logits[1]) {
			t.Errorf("%s checkpoint loaded into a frozen bf16 base differs from it saved as BF16 (%.3g)", dt, relErr(logits[0], logits[1]))
		}
	}
}
