package engine_test

import (
	"path/filepath"
	"testing"

	"hone/engine"
	"hone/safetensors"
)

// A base model with an adapter merged in gives the reference logits of the
// base with the adapter applied, on every device.
func TestMergeMatchesAdapter(t *testing.T) {
	for _, dev := range parityDevices {
		for _, name := range loraCases {
			t.Run(dev+"/"+name, func(t *testing.T) {
				d := openDevice(t, dev)
				dir := filepath.Join("testdata", "lora", name)
				m, err := engine.Load(dir, d, engine.Options{})
				if err != nil {
					t.Fatal(err)
				}
				a, err := engine.LoadAdapter(filepath.Join(dir, "adapter"), m)
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Attach(a); err != nil {
					t.Fatal(err)
				}
				if err := m.Merge(a); err != nil {
					t.Fatal(err)
				}
				bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
				lf, err := safetensors.Open(filepath.Join(dir, "logits.safetensors"))
				if err != nil {
					t.Fatal(err)
				}
				defer lf.Close()
				if e := relErr(m.Logits(bt), readTensor(t, lf, "logits")); e > parityTol {
					t.Errorf("merged logits: relative error %.3g > %g", e, parityTol)
				}
				m.Close()
				a.Close()
				if ref, ok := d.(interface{ Live() int }); ok && ref.Live() != 0 {
					t.Errorf("%d device buffers live after Close", ref.Live())
				}
			})
		}
	}
}
