package main

import (
	"path/filepath"
	"testing"

	"hone/engine"
)

// hone merge on the mixtures of experts: Mixtral with LoRA on its experts,
// router and attention, DBRX with LoRA on its fused Wqkv (clamped after)
// and out_proj. The merged model's logits are the PyTorch reference's for
// base + adapter.
func TestMergeCommandMoE(t *testing.T) {
	for _, name := range []string{"mixtral_experts", "mixtral_experts_rslora_empty", "dbrx_qkv_clip"} {
		src := filepath.Join("..", "..", "engine", "testdata", "lora", name)
		batch := func(m *engine.Model) *engine.Batch {
			bt, err := readGradBatch(filepath.Join(src, "batch.json"), m)
			if err != nil {
				t.Fatal(err)
			}
			return bt
		}
		out := filepath.Join(t.TempDir(), "merged")
		runMerge(t, src, filepath.Join(src, "adapter"), out)
		want := readAll(t, filepath.Join(src, "logits.safetensors"))["logits"]
		if e := maxRel(mergeLogits(t, out, "", batch), want); e > 1e-4 {
			t.Errorf("%s: merged logits: relative error %.3g > 1e-4", name, e)
		}
		if e := maxRel(mergeLogits(t, src, "", batch), want); e < 1e-3 {
			t.Errorf("%s: the adapter changes the logits by only %.3g", name, e)
		}
	}
}
