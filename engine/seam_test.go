package engine_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"hone/engine"
	"hone/optim"
	"hone/safetensors"
)

// The paths the parity tests do not cover go through the seam too:
// initialising and saving parameters, and an optimizer step. On the
// reference device (opaque buffers) they must give what the CPU device
// gives: the same saved bytes, and the same parameters after a step.
func TestInitSaveAndStepOnReferenceDevice(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	bt := randomBatch(t, 2, 16, c.VocabSize)
	var saved [][]byte
	var params [][]float32
	for _, name := range parityDevices {
		dev := openDevice(t, name)
		m := engine.New(c, dev, engine.Options{})
		m.InitRandom(5)
		dir := filepath.Join(t.TempDir(), name)
		if err := m.Save(dir, engine.SaveOptions{DType: safetensors.F32}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		saved = append(saved, b)
		o, err := optim.NewAdamW(m, optim.DefaultAdamW)
		if err != nil {
			t.Fatal(err)
		}
		m.ZeroGrad()
		m.ForwardBackward(bt, 1/float32(bt.Scored()))
		if _, err := o.Step(m, 1e-3); err != nil {
			t.Fatal(err)
		}
		params = append(params, append([]float32(nil), engine.HostView(dev, m.Params.Arena)...))
	}
	if !bytes.Equal(saved[0], saved[1]) {
		t.Error("InitRandom + Save differ between the cpu and ref devices")
	}
	// The step moves every parameter by about lr = 1e-3 (relative to the
	// norms' 1); the devices' float32 rounding differs by ~1e-5, so 1e-4
	// still catches a step that went missing or wrong.
	if e := relErr(params[1], params[0]); e > 1e-4 {
		t.Errorf("parameters after one AdamW step: ref vs cpu relative error %.3g", e)
	}
}
