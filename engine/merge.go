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
	c, r, d := m.Config, a.Config.Rank, m.Dev
	bs := d.Alloc(maxProjOut(c) * r)
	defer d.Free(bs)
	// W (out,in) += s·B·A, for B's rows lo..lo+out.
	merge := func(dst []float32, ab loraPair, lo, in, out int) {
		d.MatMul(bs, ab.B[lo*r:(lo+out)*r], a.scaleI, out, r, r, MatMulFlags{}) // s·B (out,r)
		d.MatMul(dst, bs, ab.A, out, in, r, MatMulFlags{Acc: true})
	}
	for l := range a.p {
		w := &m.Params.Layers[l]
		for s, dst := range [numSites][]float32{w.WQ, w.WK, w.WV, w.WO, w.WGate, w.WUp, w.WDown, w.Router} {
			ab := a.p[l][s]
			switch {
			case ab.A == nil:
			case s == projQ && c.IsDBRX(): // Wqkv: its row blocks are WQ, WK, WV
				C, QD, KVD := c.HiddenSize, c.QDim(), c.KVDim()
				merge(w.WQ, ab, 0, C, QD)
				merge(w.WK, ab, QD, C, KVD)
				merge(w.WV, ab, QD+KVD, C, KVD)
			default:
				in, out := c.siteDims(s)
				merge(dst, ab, 0, in, out)
			}
		}
		for e := range a.ep[l] {
			ex := &w.Experts[e]
			for k, dst := range [numExp][]float32{ex.W1, ex.W2, ex.W3} {
				if ab := a.ep[l][e][k]; ab.A != nil {
					in, out := c.expertDims(k)
					merge(dst, ab, 0, in, out)
				}
			}
		}
	}
	if m.lora == a {
		m.lora = nil
	}
	m.ParamsChanged()
	return nil
}

func maxProjOut(c *Config) int {
	return max(c.HiddenSize, c.IntermediateSize, c.QDim()+2*c.KVDim(), c.NumLocalExperts)
}

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
		info, ok = st.Info("transformer.wte.weight") // DBRX
	}
	if !ok {
		return "", fmt.Errorf("merge: %s: no tensor model.embed_tokens.weight (transformer.wte.weight for DBRX)", dir)
	}
	switch info.DType {
	case safetensors.F32, safetensors.BF16, safetensors.F16:
		return info.DType, nil
	}
	return "", fmt.Errorf("merge: %s: weights in %s; hone writes f32, bf16 or f16", dir, info.DType)
}
