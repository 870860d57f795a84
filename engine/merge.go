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
// adapter in adapterDir merged into its weights (W + scale·B·A in fp32, as
// Merge computes it), in the dtype of the base checkpoint's weights, with
// the base's config and tokenizer files. It streams: each tensor is read
// from the base's safetensors, merged on dev and written before the next
// is read, so it holds about one tensor in fp32, not the model.
func MergeDirs(baseDir, adapterDir, outDir string, dev Device) error {
	dtype, err := checkpointDType(baseDir)
	if err != nil {
		return err
	}
	c, err := LoadConfig(baseDir)
	if err != nil {
		return err
	}
	st, err := safetensors.OpenModel(baseDir)
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	defer st.Close()
	if err := checkTensors(c, st); err != nil {
		return fmt.Errorf("merge: %s: %w", baseDir, err)
	}
	a, err := loadAdapter(adapterDir, c, dev)
	if err != nil {
		return err
	}
	defer a.Close()
	adapted := map[string]loraPair{} // base tensor name -> its adapter pair, by projection
	proj := map[string]int{}
	for l := range a.p {
		for p := 0; p < numProj; p++ {
			if a.p[l][p].A != nil {
				name := projModule(l, p) + ".weight"
				adapted[name], proj[name] = a.p[l][p], p
			}
		}
	}
	bs := dev.Alloc(maxProjOut(c) * a.Config.Rank)
	defer dev.Free(bs)
	var tensors []safetensors.Tensor
	for _, s := range c.ParamSpecs() {
		fill := func(dst []float32) error { return st.Float32(s.Name, dst) }
		if ab, ok := adapted[s.Name]; ok {
			fill = func(dst []float32) error { return mergeTensor(dev, st, s.Name, dst, ab, bs, a, c, proj[s.Name]) }
		}
		tensors = append(tensors, safetensors.Tensor{Name: s.Name, Shape: s.Shape, Fill: fill})
	}
	if err := safetensors.WriteModel(outDir, tensors, safetensors.WriteOptions{DType: dtype}); err != nil {
		return fmt.Errorf("merge into %s: %w", outDir, err)
	}
	return writeModelFiles(c, outDir, SaveOptions{DType: dtype, SourceDir: baseDir})
}

// mergeTensor reads the base weight name of projection p into dst with
// s·B·A added, computed on dev with the products Merge uses (so the result
// is the same to the bit).
func mergeTensor(dev Device, st *safetensors.Model, name string, dst []float32, ab loraPair, bs []float32, a *Adapter, c *Config, p int) error {
	w := dev.Alloc(len(dst))
	defer dev.Free(w)
	if err := FillDevice(dev, w, func(host []float32) error { return st.Float32(name, host) }); err != nil {
		return err
	}
	in, out := c.projDims(p)
	r := a.Config.Rank
	dev.MatMul(bs, ab.B, a.scaleI, out, r, r, MatMulFlags{})    // s·B (out,r)
	dev.MatMul(w, bs, ab.A, out, in, r, MatMulFlags{Acc: true}) // W += s·B·A
	dev.Download(dst, w)
	return nil
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
