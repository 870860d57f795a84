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
	if m.nf4 != nil {
		return errNF4("merge")
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
		if it, ok := mg.proj[s.Name]; ok {
			fill = func(dst []float32, off int) error { return mg.fill(it, s.Name, dst, off) }
		}
		tensors = append(tensors, safetensors.Tensor{Name: s.Name, Shape: s.Shape, Fill: fill})
	}
	if err := safetensors.WriteModel(outDir, tensors, safetensors.WriteOptions{DType: dtype}); err != nil {
		return fmt.Errorf("merge into %s: %w", outDir, err)
	}
	return writeModelFiles(c, outDir, SaveOptions{DType: dtype, SourceDir: baseDir})
}

// merger computes one adapted weight's merged value at a time on the
// adapter's device, with the products Merge uses (so the result is the
// same to the bit), and hands it out in chunks.
type merger struct {
	c      *Config
	a      *Adapter
	st     *safetensors.Model
	proj   map[string]mergeItem // base tensor name -> its adapter pair
	w, bs  []float32            // the merged weight (largest adapted), s·B
	merged string               // the tensor w holds
}

// mergeItem is an adapted weight (out,in) and its A and B; blocks are the
// row ranges of B merged one product each, as Merge does (DBRX's Wqkv:
// q's, k's and v's rows).
type mergeItem struct {
	ab      loraPair
	in, out int
	blocks  [][2]int // first row, rows
}

func newMerger(c *Config, a *Adapter, st *safetensors.Model) *merger {
	mg := &merger{c: c, a: a, st: st, proj: map[string]mergeItem{}}
	size := 0
	add := func(name string, ab loraPair, in, out int, blocks [][2]int) {
		mg.proj[name+".weight"] = mergeItem{ab, in, out, blocks}
		size = max(size, in*out)
	}
	for l := range a.p {
		for s := 0; s < numSites; s++ {
			ab := a.p[l][s]
			if ab.A == nil {
				continue
			}
			in, out := c.siteDims(s)
			blocks := [][2]int{{0, out}}
			if s == projQ && c.IsDBRX() {
				QD, KVD := c.QDim(), c.KVDim()
				blocks = [][2]int{{0, QD}, {QD, KVD}, {QD + KVD, KVD}}
			}
			add(c.siteModule(l, s), ab, in, out, blocks)
		}
		for e := range a.ep[l] {
			for k := 0; k < numExp; k++ {
				if ab := a.ep[l][e][k]; ab.A != nil {
					in, out := c.expertDims(k)
					add(c.expertModule(l, e, k), ab, in, out, [][2]int{{0, out}})
				}
			}
		}
	}
	mg.w, mg.bs = a.dev.Alloc(size), a.dev.Alloc(maxProjOut(c)*a.Config.Rank)
	return mg
}

func (mg *merger) free() { freeAll(mg.a.dev, mg.w, mg.bs) }

// fill writes values [off, off+len(dst)) of the merged weight name,
// merging it first when w holds another.
func (mg *merger) fill(it mergeItem, name string, dst []float32, off int) error {
	d, r, in := mg.a.dev, mg.a.Config.Rank, it.in
	w := mg.w[:in*it.out]
	if mg.merged != name {
		mg.merged = ""
		if err := FillDevice(d, w, func(host []float32) error { return mg.st.Float32(name, host) }); err != nil {
			return err
		}
		for _, b := range it.blocks {
			lo, out := b[0], b[1]
			d.MatMul(mg.bs, it.ab.B[lo*r:(lo+out)*r], mg.a.scaleI, out, r, r, MatMulFlags{})   // s·B (out,r)
			d.MatMul(w[lo*in:(lo+out)*in], mg.bs, it.ab.A, out, in, r, MatMulFlags{Acc: true}) // W += s·B·A
		}
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
