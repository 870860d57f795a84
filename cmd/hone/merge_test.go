package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"hone/engine"
	"hone/safetensors"
)

func runMerge(t *testing.T, base, adapter, out string) {
	t.Helper()
	cmd := mergeCmd()
	var stderr bytes.Buffer
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"--model", base, "--adapter", adapter, "--out", out})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("hone merge: %v\n%s", err, stderr.String())
	}
}

func mergeLogits(t *testing.T, dir string, adapter string, bt func(*engine.Model) *engine.Batch) []float32 {
	t.Helper()
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(dir, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if adapter != "" {
		a, err := engine.LoadAdapter(adapter, m)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if err := m.Attach(a); err != nil {
			t.Fatal(err)
		}
	}
	return m.Logits(bt(m))
}

func maxRel(a, b []float32) float64 {
	var d, s float64
	for i := range b {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
		s = math.Max(s, math.Abs(float64(b[i])))
	}
	return d / s
}

// hone merge writes a model whose logits are the base's with the adapter
// applied: within 1e-4 of the PyTorch reference for an f32 base, and, for a
// bf16 base, in bf16 with the error of rounding the merged weights once.
func TestMergeCommand(t *testing.T) {
	src := filepath.Join("..", "..", "engine", "testdata", "lora", "gqa_packed")
	adapter := filepath.Join(src, "adapter")
	batch := func(m *engine.Model) *engine.Batch {
		bt, err := readGradBatch(filepath.Join(src, "batch.json"), m)
		if err != nil {
			t.Fatal(err)
		}
		return bt
	}
	out := filepath.Join(t.TempDir(), "merged")
	runMerge(t, src, adapter, out)
	want := readAll(t, filepath.Join(src, "logits.safetensors"))["logits"]
	if e := maxRel(mergeLogits(t, out, "", batch), want); e > 1e-4 {
		t.Errorf("f32 merged logits: relative error %.3g > 1e-4", e)
	}

	// A bf16 base: the merged model is bf16 too and matches base+adapter.
	dev, _ := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	m, err := engine.Load(src, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	base16 := filepath.Join(t.TempDir(), "base16")
	if err := m.Save(base16, engine.SaveOptions{DType: safetensors.BF16, SourceDir: src}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	out16 := filepath.Join(t.TempDir(), "merged16")
	runMerge(t, base16, adapter, out16)
	st, err := safetensors.OpenModel(out16)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := st.Info("model.layers.0.self_attn.q_proj.weight")
	st.Close()
	if info.DType != safetensors.BF16 {
		t.Errorf("merged bf16 base written as %s", info.DType)
	}
	var cfg map[string]any
	raw, _ := os.ReadFile(filepath.Join(out16, "config.json"))
	if json.Unmarshal(raw, &cfg); cfg["torch_dtype"] != "bfloat16" || cfg["num_key_value_heads"] != 2.0 {
		t.Errorf("merged config.json: torch_dtype %v, num_key_value_heads %v", cfg["torch_dtype"], cfg["num_key_value_heads"])
	}
	merged, adapted := mergeLogits(t, out16, "", batch), mergeLogits(t, base16, adapter, batch)
	if e := maxRel(merged, adapted); e > 1e-2 {
		t.Errorf("bf16 merged logits vs bf16 base + adapter: relative error %.3g > 1e-2", e)
	}
	// The adapter's effect is far above that tolerance, so the check has teeth.
	if e := maxRel(mergeLogits(t, base16, "", batch), adapted); e < 0.1 {
		t.Errorf("the adapter changes the bf16 logits by only %.3g", e)
	}
}
