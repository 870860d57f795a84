package main

import (
	"bytes"
	"math"
	"path/filepath"
	"testing"

	"hone/safetensors"
)

// `hone dev grad` on the committed reference fixtures gives the loss and
// every gradient within 1e-4 (relative to each tensor's largest entry) of
// the independent PyTorch reference (tools/reference/llama_reference.py),
// for Llama and for Mistral with a sliding window shorter than the rows.
func TestDevGradMatchesReference(t *testing.T) {
	for _, name := range []string{"bias_packed", "mistral"} {
		dir := filepath.Join("..", "..", "engine", "testdata", "parity", name)
		checkDevGrad(t, name, dir, "--model", dir, "--batch", filepath.Join(dir, "batch.json"))
	}
}

// `hone dev grad --adapter` gives the loss and the gradient of every adapter
// tensor, under its PEFT name, as the PyTorch LoRA reference does (GQA with
// packed rows; tied embeddings with llama3 rope scaling and rsLoRA; a bf16
// Mistral checkpoint; Mixtral's experts and router; DBRX's clamped Wqkv).
func TestDevGradAdapterMatchesReference(t *testing.T) {
	for _, name := range []string{"gqa_packed", "tied_llama3_rslora", "mistral_bf16_base", "mixtral_experts", "dbrx_qkv_clip"} {
		dir := filepath.Join("..", "..", "engine", "testdata", "lora", name)
		checkDevGrad(t, name, dir, "--model", dir, "--adapter", filepath.Join(dir, "adapter"), "--batch", filepath.Join(dir, "batch.json"))
	}
}

// checkDevGrad runs hone dev grad with args and compares its output with
// dir/grads.safetensors.
func checkDevGrad(t *testing.T, name, dir string, args ...string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "grads.safetensors")
	cmd := devCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs(append(append([]string{"grad"}, args...), "--out", out))
	if err := cmd.Execute(); err != nil {
		t.Fatalf("%s: hone dev grad: %v\n%s", name, err, stderr.String())
	}
	got, want := readAll(t, out), readAll(t, filepath.Join(dir, "grads.safetensors"))
	if len(got) != len(want) {
		t.Fatalf("%s: %d tensors, reference has %d", name, len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok || len(g) != len(w) {
			t.Fatalf("%s: tensor %q missing or misshapen", name, k)
		}
		var d, s float64
		for i := range w {
			d = math.Max(d, math.Abs(float64(g[i]-w[i])))
			s = math.Max(s, math.Abs(float64(w[i])))
		}
		if d > 1e-4*s {
			t.Errorf("%s: %s differs from the reference by %.3g (largest entry %.3g)", name, k, d, s)
		}
	}
}

func readAll(t *testing.T, path string) map[string][]float32 {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]float32{}
	for _, info := range f.Tensors() {
		x := make([]float32, info.NumElements())
		if err := f.Float32(info.Name, x); err != nil {
			t.Fatal(err)
		}
		out[info.Name] = x
	}
	return out
}
