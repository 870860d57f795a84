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
// the base's config and tokenizer files. It streams: values go from the
// base's safetensors to the output a chunk at a time, and an adapted
// projection is merged on dev whole just before it is written, so it holds
// about one projection in fp32, not the model.
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
	mg := newMerger(c, a, st)
	defer mg.free()
	var tensors []safetensors.Tensor
	for _, s := range c.ParamSpecs() {
		fill := func(dst []float32, off int) error { return st.Float32At(s.Name, dst, off) }
		if l, p, ok := mg.adapted(s.Name); ok {
			fill = func(dst []float32, off int) error { return mg.fill(l, p, s.Name, dst, off) }
		}
		tensors = append(tensors, safetensors.Tensor{Name: s.Name, Shape: s.Shape, Fill: fill})
	}
	if err := safetensors.WriteModel(outDir, tensors, safetensors.WriteOptions{DType: dtype}); err != nil {
		return fmt.Errorf("merge into %s: %w", outDir, err)
	}
	return writeModelFiles(c, outDir, SaveOptions{DType: dtype, SourceDir: baseDir})
}

// merger computes one adapted projection's merged weight at a time on the
// adapter's device, with the products Merge uses (so the result is the
// same to the bit), and hands it out in chunks.
type merger struct {
	c      *Config
	a      *Adapter
	st     *safetensors.Model
	proj   map[string][2]int // base tensor name -> layer, projection
	w, bs  []float32         // the merged weight (largest projection), s·B
	merged string            // the tensor w holds
}

func newMerger(c *Config, a *Adapter, st *safetensors.Model) *merger {
	mg := &merger{c: c, a: a, st: st, proj: map[string][2]int{}}
	size := 0
	for l := range a.p {
		for p := 0; p < numProj; p++ {
			if a.p[l][p].A != nil {
				mg.proj[projModule(l, p)+".weight"] = [2]int{l, p}
				in, out := c.projDims(p)
				size = max(size, in*out)
			}
		}
	}
	mg.w, mg.bs = a.dev.Alloc(size), a.dev.Alloc(maxProjOut(c)*a.Config.Rank)
	return mg
}

func (mg *merger) free() { freeAll(mg.a.dev, mg.w, mg.bs) }

// adapted says which layer and projection tensor name is, if adapted.
func (mg *merger) adapted(name string) (l, p int, ok bool) {
	lp, ok := mg.proj[name]
	return lp[0], lp[1], ok
}

// fill writes values [off, off+len(dst)) of the merged projection p of
// layer l (tensor name), merging it first when w holds another.
func (mg *merger) fill(l, p int, name string, dst []float32, off int) error {
	d, ab, r := mg.a.dev, mg.a.p[l][p], mg.a.Config.Rank
	in, out := mg.c.projDims(p)
	w := mg.w[:in*out]
	if mg.merged != name {
		mg.merged = ""
		if err := FillDevice(d, w, func(host []float32) error { return mg.st.Float32(name, host) }); err != nil {
			return err
		}
		d.MatMul(mg.bs, ab.B, mg.a.scaleI, out, r, r, MatMulFlags{}) // s·B (out,r)
		d.MatMul(w, mg.bs, ab.A, out, in, r, MatMulFlags{Acc: true}) // W += s·B·A
		mg.merged = name
	}
	d.Download(dst, w[off:off+len(dst)])
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
