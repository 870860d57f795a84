package engine

import (
	"fmt"

	"hone/safetensors"
)

// Merge adds scale·B·A into each adapted projection weight of m (fp32 on
// the device), so m alone computes what m with a attached did, and detaches
// a if it was attached.
func (m *Model) Merge(a *Adapter) error {
	if len(a.p) != m.Config.NumHiddenLayers || a.dev != m.Dev {
		return fmt.Errorf("merge: the adapter was not made for this model")
	}
	if m.Opt.FrozenBF16 {
		return errFrozenBF16("merge")
	}
	r, d := a.Config.Rank, m.Dev
	bs := d.Alloc(maxProjOut(m.Config) * r)
	defer d.Free(bs)
	for l := range a.p {
		w := &m.Params.Layers[l]
		for p, dst := range [numProj][]float32{w.WQ, w.WK, w.WV, w.WO, w.WGate, w.WUp, w.WDown} {
			ab := a.p[l][p]
			if ab.A == nil {
				continue
			}
			in, out := m.Config.projDims(p)
			d.MatMul(bs, ab.B, a.scaleI, out, r, r, MatMulFlags{})      // s·B (out,r)
			d.MatMul(dst, bs, ab.A, out, in, r, MatMulFlags{Acc: true}) // W += s·B·A
		}
	}
	if m.lora == a {
		m.lora = nil
	}
	m.ParamsChanged()
	return nil
}

func maxProjOut(c *Config) int { return max(c.HiddenSize, c.IntermediateSize, c.QDim()) }

// MergeDirs writes to outDir the HF model directory of base with the PEFT
// adapter in adapterDir merged into its weights, in the dtype of the base
// checkpoint's weights, with the base's config and tokenizer files.
func MergeDirs(baseDir, adapterDir, outDir string, dev Device) error {
	dtype, err := checkpointDType(baseDir)
	if err != nil {
		return err
	}
	m, err := Load(baseDir, dev, Options{})
	if err != nil {
		return err
	}
	defer m.Close()
	a, err := LoadAdapter(adapterDir, m)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := m.Merge(a); err != nil {
		return err
	}
	return m.Save(outDir, SaveOptions{DType: dtype, SourceDir: baseDir})
}

// checkpointDType is the dtype the base model's embedding is stored in.
func checkpointDType(dir string) (safetensors.DType, error) {
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		return "", fmt.Errorf("merge: %w", err)
	}
	defer st.Close()
	info, ok := st.Info("model.embed_tokens.weight")
	if !ok {
		return "", fmt.Errorf("merge: %s: no tensor model.embed_tokens.weight", dir)
	}
	switch info.DType {
	case safetensors.F32, safetensors.BF16, safetensors.F16:
		return info.DType, nil
	}
	return "", fmt.Errorf("merge: %s: weights in %s; hone writes f32, bf16 or f16", dir, info.DType)
}
