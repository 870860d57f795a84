package engine_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"hone/engine"
	_ "hone/engine/cpu"
	_ "hone/engine/refdev"
	"hone/safetensors"
)

// parityDevices run every parity test: the production CPU device and the
// naive reference device, whose opaque buffers prove the model reaches
// memory only through the Device seam.
var parityDevices = []string{"cpu", "ref"}

func openDevice(t testing.TB, name string) engine.Device {
	t.Helper()
	d, err := engine.OpenDevice(name, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func openCPU(t testing.TB) engine.Device { return openDevice(t, "cpu") }

// The fixtures under testdata/parity come from tools/reference/llama_reference.py,
// an independent float64 PyTorch implementation of the HF Llama math.
var parityCases = []string{"single", "gqa", "tied_llama3", "bias_packed", "mistral", "mixtral", "mixtral_aux", "dbrx", "dbrx_p2"}

const parityTol = 1e-4

type batchFile struct {
	InputIDs   [][]int `json:"input_ids"`
	Labels     [][]int `json:"labels"`
	SegmentIDs [][]int `json:"segment_ids"`
}

func readBatch(t testing.TB, path string, vocab int) *engine.Batch {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var bf batchFile
	if err := json.Unmarshal(b, &bf); err != nil {
		t.Fatal(err)
	}
	bt, err := engine.NewBatch(bf.InputIDs, bf.Labels, bf.SegmentIDs, vocab)
	if err != nil {
		t.Fatal(err)
	}
	return bt
}

func readTensor(t testing.TB, f *safetensors.File, name string) []float32 {
	t.Helper()
	info, ok := f.Info(name)
	if !ok {
		t.Fatalf("%s: no tensor %q", f.Path(), name)
	}
	dst := make([]float32, info.NumElements())
	if err := f.Float32(name, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

// relErr is max|a−b| / max|b|: a tensor-wide relative error that stays
// meaningful for entries near zero.
func relErr(a, b []float32) float64 {
	var d, s float64
	for i := range b {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
		s = math.Max(s, math.Abs(float64(b[i])))
	}
	return d / math.Max(s, 1e-30)
}

func TestParityWithReference(t *testing.T) {
	for _, dev := range parityDevices {
		for _, name := range parityCases {
			// MLPChunk 3: the MLP in chunks of 3 rows (with recomputation).
			for _, opt := range []engine.Options{{}, {Recompute: true, LossChunk: 5}, {Recompute: true, MLPChunk: 3}, {Recompute: true, CheckpointEvery: 2},
				{Recompute: true, KeepAttention: true}, {Recompute: true, KeepAttention: true, CheckpointEvery: 2}} {
				t.Run(dev+"/"+name, func(t *testing.T) { checkParity(t, openDevice(t, dev), name, opt) })
			}
		}
	}
}

func checkParity(t *testing.T, dev engine.Device, name string, opt engine.Options) {
	dir := filepath.Join("testdata", "parity", name)
	m, err := engine.Load(dir, dev, opt)
	if err != nil {
		t.Fatal(err)
	}
	bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)

	lf, err := safetensors.Open(filepath.Join(dir, "logits.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if e := relErr(m.Logits(bt), readTensor(t, lf, "logits")); e > parityTol {
		t.Errorf("logits: relative error %.3g > %g", e, parityTol)
	}

	gf, err := safetensors.Open(filepath.Join(dir, "grads.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()
	m.ZeroGrad()
	count := bt.Scored()
	sum, n := m.ForwardBackward(bt, 1/float32(count))
	if n != count {
		t.Fatalf("ForwardBackward counted %d tokens, batch has %d", n, count)
	}
	wantLoss := float64(readTensor(t, gf, "loss")[0])
	if got := sum / float64(n); math.Abs(got-wantLoss) > parityTol*wantLoss {
		t.Errorf("loss = %.7f, reference %.7f", got, wantLoss)
	}
	grads := engine.HostView(dev, m.Grads.Arena)
	for _, s := range m.Config.ParamSpecs() {
		got := grads[s.Offset : s.Offset+s.Size()]
		if e := relErr(got, readTensor(t, gf, s.Name)); e > parityTol {
			t.Errorf("grad %s (opt %+v): relative error %.3g > %g", s.Name, opt, e, parityTol)
		}
	}
	m.Close()
	if ref, ok := dev.(interface{ Live() int }); ok && ref.Live() != 0 {
		t.Errorf("%d device buffers live after Close", ref.Live())
	}
}

// BF16 mode rounds matmul operands to bf16 (8 mantissa bits, relative
// rounding error 2⁻⁹ per operand), so it is held to a stated tolerance
// against the same float64 reference: loss within 1%, logits and every
// gradient within 3% of the tensor's largest magnitude.
func TestBF16AgainstReference(t *testing.T) {
	const lossTol, tensorTol = 1e-2, 3e-2
	for _, c := range []struct {
		name string
		opt  engine.Options
	}{
		{"single", engine.Options{BF16: true}}, {"gqa", engine.Options{BF16: true}},
		{"tied_llama3", engine.Options{BF16: true, CompactBF16: true, Recompute: true}},
		{"bias_packed", engine.Options{BF16: true, CompactBF16: true}},
		{"mistral", engine.Options{BF16: true, Recompute: true}},
		{"gqa", engine.Options{BF16: true, CompactBF16: true, Recompute: true, MLPChunk: 3}}, // the MLP in chunks of 3 rows
		{"mixtral", engine.Options{BF16: true}},
		{"mixtral_aux", engine.Options{BF16: true, CompactBF16: true, Recompute: true}},
		// dbrx is left out: bf16 rounding moves Wqkv outputs across
		// clip_qkv, where the gradient is discontinuous.
		{"dbrx_p2", engine.Options{BF16: true, CompactBF16: true}},
	} {
		for _, devName := range parityDevices {
			name := c.name
			t.Run(devName+"/"+name, func(t *testing.T) {
				dev := openDevice(t, devName)
				dir := filepath.Join("testdata", "parity", name)
				m, err := engine.Load(dir, dev, c.opt)
				if err != nil {
					t.Fatal(err)
				}
				bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
				lf, _ := safetensors.Open(filepath.Join(dir, "logits.safetensors"))
				defer lf.Close()
				if e := relErr(m.Logits(bt), readTensor(t, lf, "logits")); e > tensorTol {
					t.Errorf("bf16 logits: relative error %.3g > %g", e, tensorTol)
				}
				gf, _ := safetensors.Open(filepath.Join(dir, "grads.safetensors"))
				defer gf.Close()
				m.ZeroGrad()
				sum, n := m.ForwardBackward(bt, 1/float32(bt.Scored()))
				want := float64(readTensor(t, gf, "loss")[0])
				if got := sum / float64(n); math.Abs(got-want) > lossTol*want {
					t.Errorf("bf16 loss = %.6f, reference %.6f", got, want)
				}
				worst, worstName := 0.0, ""
				grads := engine.HostView(dev, m.Grads.Arena)
				for _, s := range m.Config.ParamSpecs() {
					if e := relErr(grads[s.Offset:s.Offset+s.Size()], readTensor(t, gf, s.Name)); e > worst {
						worst, worstName = e, s.Name
					}
				}
				if worst > tensorTol {
					t.Errorf("bf16 grad %s: relative error %.3g > %g", worstName, worst, tensorTol)
				}
				t.Logf("worst bf16 gradient error %.3g (%s)", worst, worstName)
			})
		}
	}
}
