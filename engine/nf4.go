package engine

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"hone/quant/nf4"
	"hone/safetensors"
)

// A frozen NF4 base (Options.QuantizeBase "nf4", QLoRA) keeps the decoder
// layers' projection matrices only in NF4 (package quant/nf4): half a byte
// a weight and a scale per 64. Each layer's matrices are dequantized, as
// the layer runs, into one layer-sized scratch buffer that the existing
// matrix products read: bf16 in BF16 mode (the layer16 buffer of
// CompactBF16), fp32 otherwise. The whole model is never dequantized at
// once. Embeddings, the output head, norms and biases are not quantized
// (QLoRA quantizes only the Linear layers): fp32 in Params, or in BF16
// mode the embeddings and head in bf16 (w16, as with FrozenBF16) and the
// norms and biases in fp32.

// QuantizeNF4 is the Options.QuantizeBase value of an NF4 base.
const QuantizeNF4 = "nf4"

// nf4Base is the quantized matrices of a frozen NF4 base.
type nf4Base struct {
	// tensors[l][k] is layer l's k-th matrix of layerMatrixSpecs(0).
	tensors [][]*nf4.Tensor
	rel     []ParamSpec // layer 0's matrices, offsets relative to the layer's start
	// buf32 and p32 are the fp32 scratch layer (fp32 mode): matrices
	// dequantized into buf32, norms and biases viewing Params.
	buf32 []float32
	p32   Layer[float32]
	// scales holds the block scales of the matrix being dequantized,
	// reused so that training makes no garbage for the collector.
	scales []float32
	// With Options.NF4Embeddings, the token embeddings and the output
	// head (nf4embed.go); nil otherwise.
	emb *nf4Rows
	dec *nf4Decode // once the model has decoded (nf4dec.go)
	// With Options.ShardRanks, this rank's shard of the layers and the
	// gather buffers (nf4shard.go); tensors[l] views a gather buffer
	// once layer l is gathered.
	shard *nf4Shard
}

func errNF4(what string) error {
	return fmt.Errorf("%s: the model holds a frozen NF4 base (Options.QuantizeBase %q); load it without QuantizeBase for this", what, QuantizeNF4)
}

// CheckQuantizeBase says whether c's base can be held as q ("" or "nf4").
func (c *Config) CheckQuantizeBase(q string) error {
	switch {
	case q == "":
		return nil
	case q != QuantizeNF4:
		return fmt.Errorf("quantize_base %q: hone quantizes a frozen base to %q only (or \"\" for none)", q, QuantizeNF4)
	case c.MoE():
		return fmt.Errorf("quantize_base %q: %s is a mixture of experts; hone quantizes the base of Llama and Mistral models only", q, c.archName())
	}
	return nil
}

// isLayerMatrix says whether spec s is a decoder layer's weight matrix:
// what an NF4 base quantizes.
func (c *Config) isLayerMatrix(s ParamSpec) bool {
	return len(s.Shape) == 2 && strings.HasPrefix(s.Name, "model.layers.")
}

// nf4KeptSpecs are the tensors an NF4 base keeps unquantized in Params:
// all but the layer matrices (and, with NF4Embeddings, the embeddings and
// head) in fp32 mode; in BF16 mode the norms and biases only (the
// embeddings and head are in w16, see nf4Bf16Specs).
func (c *Config) nf4KeptSpecs(opt Options) []ParamSpec {
	if opt.BF16 || opt.NF4Embeddings {
		return c.vectorSpecs()
	}
	return c.respec(func(s ParamSpec) bool { return !c.isLayerMatrix(s) })
}

// nf4Bf16Specs are the embeddings and output head of a BF16-mode NF4 base
// that keeps them unquantized (none with NF4Embeddings).
func (c *Config) nf4Bf16Specs(opt Options) []ParamSpec {
	if opt.NF4Embeddings {
		return nil
	}
	return c.respec(func(s ParamSpec) bool { return len(s.Shape) == 2 && !c.isLayerMatrix(s) })
}

// respec lists the ParamSpecs keep selects, laid out anew one after another.
func (c *Config) respec(keep func(ParamSpec) bool) []ParamSpec {
	var specs []ParamSpec
	off := 0
	for _, s := range c.ParamSpecs() {
		if keep(s) {
			s.Offset = off
			off += s.Size()
			specs = append(specs, s)
		}
	}
	return specs
}

// newNF4 is New for a frozen NF4 base: everything but the quantized
// matrices, which Load or InitRandom fill.
func newNF4(c *Config, dev Device, opt Options) *Model {
	m := &Model{Config: c, Dev: dev, Opt: opt}
	m.bf16, m.layer16Of = opt.BF16, -1
	kept := c.nf4KeptSpecs(opt)
	m.Params = weightSetOf(c, kept, dev.Alloc(specsSize(kept)))
	v := c.vectorSpecs()
	m.Grads = weightSetOf(c, v, dev.Alloc(specsSize(v)))
	q := &nf4Base{tensors: make([][]*nf4.Tensor, c.NumHiddenLayers)}
	lo, hi := c.layerRange(0)
	for _, s := range c.ParamSpecs() {
		if c.isLayerMatrix(s) && strings.HasPrefix(s.Name, c.layerPrefix(0)) {
			s.Offset -= lo
			q.rel = append(q.rel, s)
		}
	}
	widest := 0
	for _, s := range q.rel {
		widest = max(widest, s.Size())
	}
	if opt.NF4Embeddings {
		q.emb = newNF4Rows(c, dev, opt)
		widest = max(widest, q.emb.rows*c.HiddenSize)
	}
	q.scales = make([]float32, nf4.Blocks(widest))
	if opt.ShardRanks > 0 {
		q.shard = newNF4Shard(c, dev, opt)
	}
	if opt.BF16 {
		if b := c.nf4Bf16Specs(opt); b != nil {
			m.w16 = weightSetOf(c, b, dev.AllocBF16(specsSize(b)))
		}
		m.layer16b = dev.AllocBF16(hi - lo)
		m.layer16 = oneLayerViews(c, m.layer16b)
	} else {
		q.buf32 = dev.Alloc(hi - lo)
		q.p32 = oneLayerViews(c, q.buf32)
	}
	m.nf4 = q
	return m
}

// freeNF4 releases what newNF4 allocated beyond New's buffers.
func (m *Model) freeNF4() {
	if m.nf4 != nil && m.nf4.buf32 != nil {
		m.Dev.Free(m.nf4.buf32)
	}
	if m.nf4 != nil && m.nf4.emb != nil {
		m.nf4.emb.free(m.Dev)
	}
	if m.nf4 != nil && m.nf4.shard != nil {
		m.nf4.shard.free(m.Dev)
	}
	m.nf4 = nil
}

// name is the checkpoint name of layer l's k-th quantized matrix.
func (q *nf4Base) name(c *Config, l, k int) string {
	return c.layerPrefix(l) + strings.TrimPrefix(q.rel[k].Name, c.layerPrefix(0))
}

// quantizeAll fills every layer's quantized matrices, fill writing layer
// l's k-th matrix in fp32 into a buffer of its size. A few workers each
// reuse one fp32 buffer, so loading holds at most a few matrices in fp32
// beside the quantized ones; the buffers go back to the OS at the end, so
// they do not stay in the process's memory while it trains.
func (m *Model) quantizeAll(fill func(l, k int, dst []float32) error) error {
	q, c := m.nf4, m.Config
	double := !m.Opt.NF4SingleScale
	widest := 0
	for _, s := range q.rel {
		widest = max(widest, s.Size())
	}
	type job struct{ l, k int }
	jobs := make(chan job)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for w := 0; w < min(runtime.GOMAXPROCS(0), 4); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]float32, widest)
			var rec []float32 // a sharded base's record of one matrix
			if q.shard != nil {
				rec = make([]float32, q.shard.widest())
			}
			for j := range jobs {
				dst := buf[:q.rel[j.k].Size()]
				quantize := func() (*nf4.Tensor, error) {
					if err := fill(j.l, j.k, dst); err != nil {
						return nil, err
					}
					return nf4.Quantize(dst, double), nil
				}
				var err error
				if s := q.shard; s != nil {
					err = s.fillShard(j.l, j.k, rec, quantize)
				} else {
					q.tensors[j.l][j.k], err = quantize()
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("quantize %s to NF4: %w", q.name(c, j.l, j.k), err):
					default:
					}
				}
			}
		}()
	}
	for l := range q.tensors {
		q.tensors[l] = make([]*nf4.Tensor, len(q.rel))
		for k := range q.rel {
			jobs <- job{l, k}
		}
	}
	close(jobs)
	wg.Wait()
	debug.FreeOSMemory()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// loadWeightsNF4 is loadWeights for a frozen NF4 base: each layer matrix
// read as fp32 and quantized, the rest read as Params and w16 hold them.
func loadWeightsNF4(m *Model, st *safetensors.Model) error {
	c := m.Config
	if err := FillDevice(m.Dev, m.Params.Arena, func(p []float32) error {
		for _, s := range c.nf4KeptSpecs(m.Opt) {
			if err := st.Float32(s.Name, p[s.Offset:s.Offset+s.Size()]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if m.w16 != nil {
		if err := FillDeviceBF16(m.Dev, m.w16.Arena, func(w []uint16) error {
			for _, s := range c.nf4Bf16Specs(m.Opt) {
				if err := readBF16(st, s.Name, w[s.Offset:s.Offset+s.Size()]); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if err := m.quantizeAll(func(l, k int, dst []float32) error { return st.Float32(m.nf4.name(c, l, k), dst) }); err != nil {
		return err
	}
	if q := m.nf4.emb; q != nil {
		return q.quantize(c, !m.Opt.NF4SingleScale, func(name string, dst []float32, off int) error { return st.Float32At(name, dst, off) })
	}
	return nil
}

// initRandomNF4 is InitRandom for a frozen NF4 base: each tensor gets the
// values InitRandom draws for it (the same stream per tensor), the layer
// matrices then quantized, the embeddings and head rounded to bf16 in
// BF16 mode.
func (m *Model) initRandomNF4(seed uint64) {
	c := m.Config
	index := map[string]int{}
	for i, s := range c.ParamSpecs() {
		index[s.Name] = i
	}
	normal := func(name string, dst []float32) {
		r := rand.New(rand.NewPCG(seed, uint64(index[name])))
		for j := range dst {
			dst[j] = float32(0.02 * r.NormFloat64())
		}
	}
	_ = FillDevice(m.Dev, m.Params.Arena, func(p []float32) error {
		for _, s := range c.nf4KeptSpecs(m.Opt) {
			dst := p[s.Offset : s.Offset+s.Size()]
			switch {
			case len(s.Shape) == 2:
				normal(s.Name, dst)
			case strings.HasSuffix(s.Name, ".bias"):
				clear(dst)
			default: // a norm's weight
				for j := range dst {
					dst[j] = 1
				}
			}
		}
		return nil
	})
	if m.w16 != nil { // straight to bf16, one tensor a core, as initRandomBF16 does
		_ = FillDeviceBF16(m.Dev, m.w16.Arena, func(w []uint16) error {
			var wg sync.WaitGroup
			for _, s := range c.nf4Bf16Specs(m.Opt) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(seed, uint64(index[s.Name])))
					for j := range w[s.Offset : s.Offset+s.Size()] {
						w[s.Offset+j] = safetensors.Float32ToBF16(float32(0.02 * r.NormFloat64()))
					}
				}()
			}
			wg.Wait()
			return nil
		})
	}
	_ = m.quantizeAll(func(l, k int, dst []float32) error {
		normal(m.nf4.name(c, l, k), dst)
		return nil
	})
	if q := m.nf4.emb; q != nil {
		// Each tensor's one stream, drawn in order a chunk at a time.
		streams := map[string]*rand.Rand{}
		_ = q.quantize(c, !m.Opt.NF4SingleScale, func(name string, dst []float32, _ int) error {
			r := streams[name]
			if r == nil {
				r = rand.New(rand.NewPCG(seed, uint64(index[name])))
				streams[name] = r
			}
			for j := range dst {
				dst[j] = float32(0.02 * r.NormFloat64())
			}
			return nil
		})
	}
}

// nf4Layer16 is w16Layer for an NF4 base in BF16 mode: layer l's matrices
// dequantized to bf16 in the layer scratch (kept while l is the layer
// running, so a recomputed forward and its backward dequantize once).
func (m *Model) nf4Layer16(l int) *Layer[uint16] {
	if m.layer16Of != l {
		if td, ok := m.Dev.(*TimedDevice); ok {
			defer td.since("DequantizeNF4", time.Now())
		}
		q := m.nf4
		_ = FillDeviceBF16(m.Dev, m.layer16b, func(buf []uint16) error {
			for k, s := range q.rel {
				m.dequantizeBF16(q.tensors[l][k], buf[s.Offset:s.Offset+s.Size()])
			}
			return nil
		})
		m.layer16Of = l
	}
	return &m.layer16
}

// NF4Kernels is an optional extra of a Device (see HostMemory): fast
// kernels on whole NF4 blocks in host memory. Without it an NF4 base
// dequantizes and decodes with quant/nf4's Go code.
type NF4Kernels interface {
	// DequantizeNF4BF16 writes len(scales) blocks of 64 values, packed
	// two to a byte (the first in the high nibble), into dst as
	// bf16(code[index] * scale), rounded to nearest even.
	DequantizeNF4BF16(dst []uint16, packed []byte, scales []float32, code *[16]float32)
	// MatVecNF4 writes y[r*ldy+o] (+)= Σ_k W[o][k]·x[r*cols+k] in fp32
	// for the n rows of x and the rows of W, cols/64 blocks each (packed
	// as above, a scale per block), W[o][k] = code[index] * scale.
	MatVecNF4(y []float32, ldy int, x []float32, n, cols int, packed []byte, scales []float32, code *[16]float32, acc bool)
}

// nf4Kernel is d's NF4Kernels extra, looking through a TimedDevice
// (which times the whole layer's dequantization instead: see nf4Layer16).
func nf4Kernel(d Device) (NF4Kernels, bool) {
	if td, ok := d.(*TimedDevice); ok {
		d = td.Device
	}
	k, ok := d.(NF4Kernels)
	return k, ok
}

// dequantizeBF16 dequantizes t into dst (host memory) on every core.
func (m *Model) dequantizeBF16(t *nf4.Tensor, dst []uint16) {
	k, ok := nf4Kernel(m.Dev)
	parallelChunks(len(dst), func(lo, hi int) { // chunks start on block boundaries
		if !ok {
			t.DequantizeBF16(dst[lo:hi], lo)
			return
		}
		full := (hi - lo) / nf4.BlockSize * nf4.BlockSize
		scales := m.nf4.scales[lo/nf4.BlockSize : (lo+full)/nf4.BlockSize]
		t.Scales(scales, lo/nf4.BlockSize)
		k.DequantizeNF4BF16(dst[lo:lo+full], t.Packed[lo/2:(lo+full)/2], scales, &nf4.Code)
		if full < hi-lo {
			t.DequantizeBF16(dst[lo+full:hi], lo+full)
		}
	})
}

// layerParams is layer l's fp32 parameters: Params' views, or for an NF4
// base in fp32 mode its matrices dequantized into the scratch layer with
// the norms and biases of Params.
func (m *Model) layerParams(l int) *Layer[float32] {
	q := m.nf4
	if q == nil || m.bf16 {
		return &m.Params.Layers[l]
	}
	if m.layer16Of != l {
		_ = FillDevice(m.Dev, q.buf32, func(buf []float32) error {
			for k, s := range q.rel {
				t, dst := q.tensors[l][k], buf[s.Offset:s.Offset+s.Size()]
				parallelChunks(len(dst), func(lo, hi int) { t.Dequantize(dst[lo:hi], lo) })
			}
			return nil
		})
		m.layer16Of = l
	}
	p, v := &q.p32, &m.Params.Layers[l]
	p.LN1, p.LN2, p.BQ, p.BK, p.BV, p.BO, p.BGate, p.BUp, p.BDown = v.LN1, v.LN2, v.BQ, v.BK, v.BV, v.BO, v.BGate, v.BUp, v.BDown
	return p
}

// NF4Bytes is the storage of the model's quantized matrices (0 without an
// NF4 base).
func (m *Model) NF4Bytes() int64 {
	if m.nf4 == nil {
		return 0
	}
	if s := m.nf4.shard; s != nil { // this rank's shard
		return 4 * int64(len(s.own))
	}
	var n int64
	for _, ts := range m.nf4.tensors {
		for _, t := range ts {
			if t != nil {
				n += t.Bytes()
			}
		}
	}
	if q := m.nf4.emb; q != nil {
		n += q.bytes()
	}
	return n
}

// nf4WeightBytes is weightBytes for an NF4 base: the quantized matrices
// (a sharded base's chunks and gather buffers), the unquantized tensors
// (fp32, or bf16 embeddings and head in BF16 mode), the norms' and biases'
// unused gradients and the scratch layer.
func (c *Config) nf4WeightBytes(opt Options) int64 {
	var q int64
	if n := opt.ShardRanks; n > 0 { // this rank's chunks and the two gather buffers (nf4shard.go)
		chunk := int64(c.NF4ShardChunk(opt, n))
		q = 4*int64(c.NumHiddenLayers)*chunk + 2*4*int64(n)*chunk
	} else {
		for _, s := range c.ParamSpecs() {
			if c.isLayerMatrix(s) {
				q += nf4.StorageBytes(int64(s.Size()), !opt.NF4SingleScale)
			}
		}
	}
	if opt.NF4Embeddings {
		q += c.nf4RowsBytes(opt)
	}
	lo, hi := c.layerRange(0)
	vec := int64(specsSize(c.vectorSpecs()))
	if opt.BF16 {
		return q + 4*vec + 2*int64(specsSize(c.nf4Bf16Specs(opt))) + 4*vec + 2*int64(hi-lo)
	}
	return q + 4*int64(specsSize(c.nf4KeptSpecs(opt))) + 4*vec + 4*int64(hi-lo)
}

// DequantizedTensors are the base's weights as the model computes with
// them in fp32 mode, under their checkpoint names, in ParamSpecs order:
// the NF4 matrices dequantized to fp32 and the unquantized tensors as
// held. It allocates the whole model on the host: for writing a reference
// checkpoint of small models (hone dev dequantize).
func (m *Model) DequantizedTensors() ([]safetensors.Tensor, error) {
	q, c := m.nf4, m.Config
	switch {
	case q == nil:
		return nil, fmt.Errorf("dequantize: the model has no quantized base (Options.QuantizeBase)")
	case m.bf16:
		return nil, fmt.Errorf("dequantize: the model computes in bf16; load it without BF16 for the fp32 values")
	case q.shard != nil:
		return nil, fmt.Errorf("dequantize: the model holds one rank's shard of its base (Options.ShardRanks); load it without ShardRanks")
	}
	data := map[string][]float32{}
	host := HostView(m.Dev, m.Params.Arena)
	for _, s := range c.nf4KeptSpecs(m.Opt) {
		data[s.Name] = host[s.Offset : s.Offset+s.Size()]
	}
	if q.emb != nil {
		for _, name := range q.emb.names {
			data[name] = q.emb.dequantizeAll(name)
		}
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		for k, s := range q.rel {
			f := make([]float32, s.Size())
			q.tensors[l][k].Dequantize(f, 0)
			data[q.name(c, l, k)] = f
		}
	}
	var out []safetensors.Tensor
	for _, s := range c.ParamSpecs() {
		out = append(out, safetensors.Tensor{Name: s.Name, Shape: s.Shape, Data: data[s.Name]})
	}
	return out, nil
}
