package serving_test

import (
	"path/filepath"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/safetensors"
	"hone/serving"
)

// A checkpoint whose matrices are all bf16 is served from a frozen bf16
// base (decoded through its bf16 weights, exact for bf16 values); an fp32
// checkpoint decodes in fp32; an adapter directory is served as its base
// is, with the adapter attached.
func TestLoadOptions(t *testing.T) {
	lora := filepath.Join("..", "engine", "testdata", "lora")
	fp32 := filepath.Join(t.TempDir(), "fp32")
	m, err := engine.Load(filepath.Join(lora, "mistral_bf16_base"), cpu.New(0), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Save(fp32, engine.SaveOptions{DType: safetensors.F32}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  string
		want engine.Options
	}{
		{filepath.Join(lora, "mistral_bf16_base"), engine.Options{FrozenBF16: true}},
		{filepath.Join(lora, "mistral_bf16_base", "adapter"), engine.Options{FrozenBF16: true}},
		{fp32, engine.Options{}},
		{filepath.Join(lora, "gqa_packed", "adapter"), engine.Options{}},
	} {
		got, err := serving.LoadOptions(tc.dir)
		if err != nil {
			t.Fatal(err)
		}
		if got.FrozenBF16 != tc.want.FrozenBF16 || got.DecodeBF16 != tc.want.DecodeBF16 || got.BF16 || got.LoRA != nil {
			t.Errorf("LoadOptions(%s) = %+v, want %+v", tc.dir, got, tc.want)
		}
	}
	// The bf16 adapter directory loads with its adapter attached: it
	// decodes what the forward pass of the base with the adapter computes.
	dir := filepath.Join(lora, "mistral_bf16_base", "adapter")
	opt, _ := serving.LoadOptions(dir)
	served, err := engine.LoadWithAdapter(dir, cpu.New(0), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer served.Close()
	dec, err := served.NewDecoder(8)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	ids := []int{1, 5, 9, 3}
	got, err := dec.Append(ids)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := engine.LoadWithAdapter(dir, cpu.New(0), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	base, err := engine.Load(filepath.Join(lora, "mistral_bf16_base"), cpu.New(0), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer base.Close()
	bt := &engine.Batch{B: 1, T: 4, IDs: []int32{1, 5, 9, 3}, Targets: make([]int32, 4), Pos: []int32{0, 1, 2, 3}, DocStart: make([]int32, 4)}
	V := ref.Config.VocabSize
	want, without := ref.Logits(bt)[3*V:], base.Logits(bt)[3*V:]
	if e := maxRel(got, want); e > 1e-5 {
		t.Errorf("served adapter decodes logits %.3g from the forward pass with the adapter", e)
	}
	if e := maxRel(without, want); e < 1e-4 {
		t.Fatalf("the adapter changes the logits by only %.3g: the test cannot tell it is attached", e)
	}
}

func maxRel(a, b []float32) float64 {
	var d, s float64
	for i := range b {
		d = max(d, abs(float64(a[i])-float64(b[i])))
		s = max(s, abs(float64(b[i])))
	}
	return d / s
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
