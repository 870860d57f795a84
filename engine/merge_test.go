package engine_test

import (
	"bytes"
	"os"
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

// MergeDirs, which streams the base tensor by tensor, writes the same
// bytes as merging the whole model in memory (Load, Merge, Save in the
// base's dtype), config and copied files included, on every device; the
// fixtures' adapters have non-zero lora_B, so the merged projections
// differ from the base's.
func TestMergeDirsMatchesInMemoryMerge(t *testing.T) {
	for _, dev := range parityDevices {
		for _, name := range loraCases {
			t.Run(dev+"/"+name, func(t *testing.T) {
				d := openDevice(t, dev)
				dir := filepath.Join("testdata", "lora", name)
				streamed, whole := filepath.Join(t.TempDir(), "streamed"), filepath.Join(t.TempDir(), "whole")
				if err := engine.MergeDirs(dir, filepath.Join(dir, "adapter"), streamed, d); err != nil {
					t.Fatal(err)
				}
				m, err := engine.Load(dir, d, engine.Options{})
				if err != nil {
					t.Fatal(err)
				}
				a, err := engine.LoadAdapter(filepath.Join(dir, "adapter"), m)
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Merge(a); err != nil {
					t.Fatal(err)
				}
				st, err := safetensors.OpenModel(dir)
				if err != nil {
					t.Fatal(err)
				}
				info, ok := st.Info("model.embed_tokens.weight")
				if !ok {
					info, _ = st.Info("transformer.wte.weight") // DBRX
				}
				st.Close()
				if err := m.Save(whole, engine.SaveOptions{DType: info.DType, SourceDir: dir}); err != nil {
					t.Fatal(err)
				}
				m.Close()
				a.Close()
				files, _ := os.ReadDir(whole)
				if len(files) < 2 {
					t.Fatalf("in-memory merge wrote %d files", len(files))
				}
				for _, f := range files {
					want, _ := os.ReadFile(filepath.Join(whole, f.Name()))
					got, err := os.ReadFile(filepath.Join(streamed, f.Name()))
					if err != nil || !bytes.Equal(got, want) {
						t.Errorf("%s: streamed merge differs from the in-memory merge (%v)", f.Name(), err)
					}
				}
				base, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
				if got, _ := os.ReadFile(filepath.Join(streamed, "model.safetensors")); err == nil && bytes.Equal(got, base) {
					t.Error("the merged weights equal the base's: the test cannot tell the adapter was merged")
				}
				if ref, ok := d.(interface{ Live() int }); ok && ref.Live() != 0 {
					t.Errorf("%d device buffers live after the merges", ref.Live())
				}
			})
		}
	}
}
