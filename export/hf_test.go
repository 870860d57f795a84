package export_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/engine"
	"hone/export"
	"hone/internal/testmodel"
	"hone/safetensors"
)

func TestHFExport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.Write(t, dir, llama3Scaled, 2)
	// A source in float32, as a checkpoint may be, must come out bf16.
	src, err := safetensors.OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	var tensors []safetensors.Tensor
	want := map[string][]float32{}
	for _, info := range src.Tensors() {
		x := make([]float32, info.NumElements())
		if err := src.Float32(info.Name, x); err != nil {
			t.Fatal(err)
		}
		x[0] += 1.0 / 3 // not representable in bf16
		tensors = append(tensors, safetensors.Tensor{Name: info.Name, Shape: info.Shape, Data: x})
		want[info.Name] = x
	}
	src.Close()
	if err := safetensors.WriteModel(dir, tensors, safetensors.WriteOptions{DType: safetensors.F32}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "hf")
	if err := export.HF(context.Background(), dir, out); err != nil {
		t.Fatal(err)
	}
	st, err := safetensors.OpenModel(out)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if len(st.Tensors()) != len(want) {
		t.Errorf("%d tensors, want %d", len(st.Tensors()), len(want))
	}
	for _, info := range st.Tensors() {
		if info.DType != safetensors.BF16 {
			t.Errorf("%s: dtype %s, want BF16", info.Name, info.DType)
		}
		got := make([]float32, info.NumElements())
		if err := st.Float32(info.Name, got); err != nil {
			t.Fatal(err)
		}
		for i, v := range want[info.Name] {
			if w := safetensors.BF16ToFloat32(safetensors.Float32ToBF16(v)); got[i] != w {
				t.Fatalf("%s[%d] = %g, want %g", info.Name, i, got[i], w)
			}
		}
	}
	cfg := map[string]any{}
	readJSON(t, filepath.Join(out, "config.json"), &cfg)
	if cfg["torch_dtype"] != "bfloat16" || cfg["rope_scaling"] == nil {
		t.Errorf("config.json = %v, want torch_dtype bfloat16 and the source's fields", cfg)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil || !slices.Equal(a, b) {
			t.Errorf("%s not carried over unchanged (%v)", f, err)
		}
	}
	var gen struct {
		BOS int             `json:"bos_token_id"`
		EOS engine.TokenIDs `json:"eos_token_id"`
	}
	readJSON(t, filepath.Join(out, "generation_config.json"), &gen)
	if gen.BOS != 128000 || !slices.Equal(sorted(gen.EOS), []int{128001, 128008, 128009}) {
		t.Errorf("generation_config.json = %+v, want bos 128000 and eos 128001, 128008, 128009", gen)
	}
	// The export loads as a model.
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Load(out, dev, engine.Options{}); err != nil {
		t.Errorf("load the export: %v", err)
	}
	if err := export.HF(context.Background(), dir, dir); !errors.Is(err, export.ErrInvalid) {
		t.Errorf("exporting over the source: err = %v, want ErrInvalid", err)
	}
}

func TestModelfile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.Write(t, dir, testmodel.Llama3Tiny, 1)
	outDir := filepath.Join(t.TempDir(), "bot") // created by the export
	if err := export.GGUF(context.Background(), dir, filepath.Join(outDir, "bot.gguf"), export.GGUFOptions{DType: "f16"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(outDir, export.ModelfileName))
	if err != nil {
		t.Fatal(err)
	}
	mf := string(b)
	for _, want := range []string{"FROM ./bot.gguf\n", `PARAMETER stop "<|eot_id|>"`, `PARAMETER stop "<|end_of_text|>"`,
		`PARAMETER stop "<|start_header_id|>"`, "TEMPLATE \"\"\"", "{{ .Prompt }}<|eot_id|>"} {
		if !strings.Contains(mf, want) {
			t.Errorf("Modelfile lacks %q:\n%s", want, mf)
		}
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func sorted(x []int) []int { y := slices.Clone(x); slices.Sort(y); return y }
