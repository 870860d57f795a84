package engine

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"hone/quant/nf4"
	"hone/safetensors"
)

// A sharded NF4 base (QuantizeBase "nf4" with ShardRanks N > 0, QLoRA
// under ZeRO-3). Each decoder layer's NF4 data (every matrix's scales,
// then its packed codes: nf4Rec) is laid out as one run of fp32 words, cut
// into N equal chunks; rank q holds chunk q of every layer (NF4Shard).
// Before a layer runs the hooks all-gather its chunks into one of two
// layer-sized gather buffers (the next layer is prefetched into the
// other), whose words the layer's nf4.Tensors view; the layer is then
// dequantized from them as an unsharded NF4 base dequantizes its own, so
// both compute with the same bits. Words carry the bytes because an
// all-gather only copies. The unquantized tensors (norms, biases,
// embeddings and head) stay whole on every rank: they take no gather.

// nf4Rec is one layer matrix's place in a layer's NF4 data: its fp32
// scales (Absmax, or Absmax2 under double quantization) and the Offset
// from word at, then its bytes (QAbsmax under double quantization, then
// Packed), padded to whole words.
type nf4Rec struct {
	n, at, scales, words int // values; first word; scale words; words in all
	double               bool
}

func newNF4Rec(n, at int, double bool) nf4Rec {
	nb := nf4.Blocks(n)
	r := nf4Rec{n: n, at: at, scales: nb, double: double}
	bytes := (n + 1) / 2
	if double {
		r.scales, bytes = (nb+nf4.ScaleBlockSize-1)/nf4.ScaleBlockSize, bytes+nb
	}
	r.words = r.scales + 1 + (bytes+3)/4
	return r
}

// wordBytes views w's memory as bytes.
func wordBytes(w []float32) []byte {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), 4*len(w))
}

// view points t at the record in w (the record's words, from r.at).
func (r nf4Rec) view(t *nf4.Tensor, w []float32) {
	w = w[r.at : r.at+r.words]
	b := wordBytes(w[r.scales+1:])
	nb := nf4.Blocks(r.n)
	t.N, t.Offset = r.n, w[r.scales]
	if r.double {
		t.Absmax2, t.QAbsmax, b = w[:r.scales:r.scales], b[:nb:nb], b[nb:]
	} else {
		t.Absmax = w[:r.scales:r.scales]
	}
	t.Packed = b[: (r.n+1)/2 : (r.n+1)/2]
}

// put writes t into the record's words w (r.words long).
func (r nf4Rec) put(t *nf4.Tensor, w []float32) {
	var v nf4.Tensor
	r.at = 0
	r.view(&v, w)
	w[r.scales] = t.Offset
	copy(v.Absmax, t.Absmax)
	copy(v.Absmax2, t.Absmax2)
	copy(v.QAbsmax, t.QAbsmax)
	copy(v.Packed, t.Packed)
}

// nf4Layout is a layer's NF4 data: each matrix's record (layer 0's
// matrices, in order) and the words in all.
func (c *Config) nf4Layout(double bool) ([]nf4Rec, int) {
	var recs []nf4Rec
	words := 0
	for _, s := range c.ParamSpecs() {
		if c.isLayerMatrix(s) && strings.HasPrefix(s.Name, c.layerPrefix(0)) {
			recs = append(recs, newNF4Rec(s.Size(), words, double))
			words += recs[len(recs)-1].words
		}
	}
	return recs, words
}

// NF4ShardChunk is each rank's chunk, in words, of a layer's NF4 data
// sharded over n ranks.
func (c *Config) NF4ShardChunk(opt Options, n int) int {
	_, words := c.nf4Layout(!opt.NF4SingleScale)
	return (words + n - 1) / n
}

// nf4Shard is a sharded NF4 base's layout, this rank's chunks and the
// gather buffers with the tensors viewing them.
type nf4Shard struct {
	recs        []nf4Rec
	chunk, rank int
	own         []float32 // this rank's chunk of every layer, layer after layer
	bufs        [2][]float32
	views       [2][]*nf4.Tensor
	plan        []int // the pass's layer gathers in order, a repeat of one layer dropped
	next        int   // plan's next gather
	last        int   // a training pass's last gather (-1: not one)
}

func newNF4Shard(c *Config, dev Device, opt Options) *nf4Shard {
	n := opt.ShardRanks
	s := &nf4Shard{chunk: c.NF4ShardChunk(opt, n)}
	s.recs, _ = c.nf4Layout(!opt.NF4SingleScale)
	s.own = dev.Alloc(c.NumHiddenLayers * s.chunk)
	for b := range s.bufs {
		s.bufs[b] = dev.Alloc(n * s.chunk)
		for _, r := range s.recs {
			t := &nf4.Tensor{}
			r.view(t, s.bufs[b])
			s.views[b] = append(s.views[b], t)
		}
	}
	return s
}

// widest is the largest record's words.
func (s *nf4Shard) widest() int {
	w := 0
	for _, r := range s.recs {
		w = max(w, r.words)
	}
	return w
}

func (s *nf4Shard) free(dev Device) { freeAll(dev, s.own, s.bufs[0], s.bufs[1]) }

// NF4Shard is rank's chunk of every layer's NF4 data, layer after layer
// (NF4ShardChunk words each), on a model with a sharded NF4 base: loading
// (LoadNF4Shard) or InitRandom quantizes the matrices overlapping it and
// fills it; the hooks gather from it. Nil on any other model.
func (m *Model) NF4Shard(rank int) []float32 {
	if m.nf4 == nil || m.nf4.shard == nil {
		return nil
	}
	m.nf4.shard.rank = rank
	return m.nf4.shard.own
}

// fillShard quantizes with quantize and writes into this rank's chunk of
// layer l the part of matrix k's record that falls in it; a matrix whose
// record does not is neither read nor quantized.
func (s *nf4Shard) fillShard(l, k int, tmp []float32, quantize func() (*nf4.Tensor, error)) error {
	r := s.recs[k]
	lo, hi := max(r.at, s.rank*s.chunk), min(r.at+r.words, (s.rank+1)*s.chunk)
	if lo >= hi {
		return nil
	}
	t, err := quantize()
	if err != nil {
		return err
	}
	w := tmp[:r.words]
	r.put(t, w)
	copy(s.own[l*s.chunk+lo-s.rank*s.chunk:], w[lo-r.at:hi-r.at])
	return nil
}

// planNF4 turns a pass's plan of gathers (planShardPass) into its layer
// gathers; a layer gathered again right after itself stays in its buffer.
func (m *Model) planNF4() {
	s := m.nf4.shard
	s.plan, s.next, s.last = s.plan[:0], 0, -1
	for i, st := range m.shard.plan {
		if st.part >= m.Config.NumHiddenLayers || len(s.plan) > 0 && s.plan[len(s.plan)-1] == st.part {
			continue
		}
		s.plan = append(s.plan, st.part)
		if i <= m.shard.last {
			s.last = len(s.plan) - 1
		}
	}
}

// gatherNF4 is gather for a sharded NF4 base: layer p's NF4 data into the
// buffer of its turn (the plan's gathers alternate between the two), its
// tensors pointed at it, the next planned layer prefetched into the other
// buffer. The other parts are whole.
func (m *Model) gatherNF4(p int) {
	s := m.nf4.shard
	if p >= m.Config.NumHiddenLayers || s.next > 0 && s.plan[s.next-1] == p {
		return
	}
	if s.next >= len(s.plan) || s.plan[s.next] != p {
		panic(fmt.Sprintf("engine: a sharded NF4 pass gathers layer %d out of its planned order", p))
	}
	b := s.next % 2
	s.next++
	m.Dev.Sync()
	m.Shards.Gather(p, UseParams, s.bufs[b], nil)
	for k, r := range s.recs {
		s.views[b][k].Offset = s.bufs[b][r.at+r.scales]
	}
	m.nf4.tensors[p] = s.views[b]
	if s.next < len(s.plan) {
		m.Shards.Prefetch(s.plan[s.next], s.bufs[s.next%2])
	} else if s.next-1 == s.last && b != 0 {
		m.Shards.PrefetchNext(s.plan[0], s.bufs[0])
	}
}

// releaseNF4 is release for a sharded NF4 base: once a training pass's
// last layer is done with buffer 0 (its backward: a training pass's last
// use of a layer), the next pass's first layer may be prefetched into it.
func (m *Model) releaseNF4(p int, use Use) {
	s := m.nf4.shard
	if use&UseGrads != 0 && s.last >= 0 && s.next-1 == s.last && s.last%2 == 0 && s.plan[s.last] == p {
		m.Dev.Sync()
		m.Shards.PrefetchNext(s.plan[0], s.bufs[0])
	}
}

// LoadNF4Shard reads the weights of m, a model with a sharded NF4 base
// built by New and given its rank (NF4Shard), from the HF model directory
// dir: the unquantized tensors whole, the layer matrices quantized into
// the rank's chunks, each read only where it overlaps them.
func LoadNF4Shard(dir string, m *Model) error {
	if m.nf4 == nil || m.nf4.shard == nil {
		return errors.New("engine: LoadNF4Shard loads a model built with QuantizeBase and ShardRanks")
	}
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		return fmt.Errorf("load model %s: %w", dir, err)
	}
	defer st.Close()
	if err := checkTensors(m.Config, st); err != nil {
		return fmt.Errorf("load model %s: %w", dir, err)
	}
	if err := loadWeightsNF4(m, st); err != nil {
		return fmt.Errorf("load model %s: %w", dir, err)
	}
	m.ParamsChanged()
	return nil
}
