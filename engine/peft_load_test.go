package engine_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
	"hone/safetensors"
)

// LoadWithAdapter on a PEFT adapter directory loads the base its
// base_model_name_or_path names and attaches the adapter: the logits are the
// PyTorch reference's for base + adapter, and Close releases the adapter
// with the model. A model directory loads as is,
// and an adapter naming a hub id instead of a local base is refused.
func TestLoadWithAdapter(t *testing.T) {
	dir := filepath.Join("testdata", "lora", "gqa_packed")
	dev := openDevice(t, "ref")
	m, err := engine.LoadWithAdapter(filepath.Join(dir, "adapter"), dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
	lf, err := safetensors.Open(filepath.Join(dir, "logits.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	want := readTensor(t, lf, "logits")
	if e := relErr(m.Logits(bt), want); e > parityTol {
		t.Errorf("adapter directory: logits relative error %.3g > %g", e, parityTol)
	}
	base, err := engine.LoadWithAdapter(dir, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e := relErr(base.Logits(bt), want); e < 1e-2 {
		t.Errorf("the base alone is within %.3g of base + adapter: the check has no teeth", e)
	}
	m.Close()
	base.Close()
	if live := dev.(interface{ Live() int }).Live(); live != 0 {
		t.Errorf("%d device buffers live after Close", live)
	}

	hub := t.TempDir()
	raw, _ := os.ReadFile(filepath.Join(dir, "adapter", engine.AdapterConfigFile))
	os.WriteFile(filepath.Join(hub, engine.AdapterConfigFile), []byte(strings.Replace(string(raw), `"..",`, `"meta-llama/Llama-3.2-1B",`, 1)), 0o644)
	if _, err := engine.LoadWithAdapter(hub, dev, engine.Options{}); err == nil || !strings.Contains(err.Error(), `"meta-llama/Llama-3.2-1B" is not a local model directory`) {
		t.Errorf("adapter naming a hub id: %v", err)
	}
}
