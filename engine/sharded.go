package engine

import (
	"errors"
	"fmt"

	"hone/safetensors"
)

// Sharded parameters (ZeRO stage 3 / FSDP style). With Options.ShardRanks
// N > 0 the model holds no copy of its parameters or gradients of its
// own: Params and Grads are views of one gather buffer each, big enough
// for the largest part (the embeddings, one decoder layer, or the final
// norm with the output head), and every part's views alias the start of
// that buffer. Before a part runs the model calls its ShardHooks'
// Gather, which fills the views (all-gathering the ranks' shards); after
// it, Release, which takes the part's gradients (reduce-scattering them
// into the ranks' shards). The model knows nothing about ranks or
// collectives: the hooks (train's) do.

// PartEmbed and PartHead are the part numbers of the embeddings and of the
// final norm with the output head for a config of L layers (layers are
// parts 0 to L-1).
func (c *Config) PartEmbed() int { return c.NumHiddenLayers }
func (c *Config) PartHead() int  { return c.NumHiddenLayers + 1 }

// NumParts is how many parts a sharded model gathers one at a time.
func (c *Config) NumParts() int { return c.NumHiddenLayers + 2 }

// PartRange is part p's range [lo, hi) in the full arena (ParamSpecs'
// layout). The parts cover the arena exactly, in order embed, layers,
// head.
func (c *Config) PartRange(p int) (lo, hi int) {
	switch p {
	case c.PartEmbed():
		return 0, c.VocabSize * c.HiddenSize
	case c.PartHead():
		_, lo = c.layerRange(c.NumHiddenLayers - 1)
		return lo, int(c.NumParams())
	}
	return c.layerRange(p)
}

// ShardChunk is the size of each rank's chunk of part p over n ranks: rank
// q holds the part's elements [q·chunk, min((q+1)·chunk, size)), so an
// all-gather of equal chunks lands every element in place.
func (c *Config) ShardChunk(p, n int) int {
	lo, hi := c.PartRange(p)
	return (hi - lo + n - 1) / n
}

// CheckShardable says whether a config's parameters can be sharded:
// Llama, Mistral and Mixtral layouts.
func (c *Config) CheckShardable() error {
	if c.IsDBRX() {
		return errors.New("sharded parameters support Llama, Mistral and Mixtral models, not DBRX")
	}
	return nil
}

// Segment is one full-arena range [Lo, Hi) that a part gathers, and the
// offset At in the gather buffer where it lands (rounded up to n equal
// chunks, so an all-gather lands every element in place).
type Segment struct{ Lo, Hi, At int }

// PartSegments are the ranges part p gathers over n ranks: its own range,
// and with tied embeddings the head also gathers the embeddings (its
// output head), first, with the final norm after them.
func (c *Config) PartSegments(p, n int) []Segment {
	lo, hi := c.PartRange(p)
	if p != c.PartHead() || !c.TieWordEmbeddings {
		return []Segment{{lo, hi, 0}}
	}
	elo, ehi := c.PartRange(c.PartEmbed())
	return []Segment{{elo, ehi, 0}, {lo, hi, n * ((ehi - elo + n - 1) / n)}}
}

// ShardRanges are rank q's ranges of the full arena over n ranks, one per
// part in part order (a short last chunk's may be empty): the layout of a
// sharded checkpoint's files.
func (c *Config) ShardRanges(n, q int) [][2]int {
	var out [][2]int
	for p := range c.NumParts() {
		lo, hi := c.PartRange(p)
		a := min(hi, lo+q*c.ShardChunk(p, n))
		out = append(out, [2]int{a, min(hi, a+c.ShardChunk(p, n))})
	}
	return out
}

// shardSlot is the gather buffer's size for n ranks: the largest part,
// each segment rounded up to n equal chunks.
func (c *Config) shardSlot(n int) int {
	slot := 0
	for p := range c.NumParts() {
		for _, s := range c.PartSegments(p, n) {
			slot = max(slot, s.At+n*((s.Hi-s.Lo+n-1)/n))
		}
	}
	return slot
}

// Use says what of a part the model needs: its parameters, or (with
// UseGrads) also its gradients, which the backward pass adds into.
type Use uint8

const (
	UseParams Use = 1 << iota
	UseGrads
)

// ShardHooks supply a sharded model's parameters part by part and take its
// gradients (see Options.ShardRanks). The model calls them from the
// goroutine running it, in the same order on every rank for the same
// batches. They cannot fail the model's call: an implementation keeps its
// first error for its caller to check.
type ShardHooks interface {
	// Gather makes part p's views of Params hold the part's parameters
	// (with UseParams) and zeroes its views of Grads (with UseGrads).
	Gather(p int, use Use)
	// Release ends the use of part p: with UseGrads, its views of Grads
	// hold this pass's gradients of the part, which must be taken now
	// (the views are reused by the next part).
	Release(p int, use Use)
}

// newShardedWeights views one gather buffer as every part of a weight set
// over n ranks.
func newShardedWeights(c *Config, slot []float32, n int) *Weights {
	C, E := c.HiddenSize, c.VocabSize*c.HiddenSize
	w := &Weights{Arena: slot, Embed: slot[:E:E], NormF: slot[:C:C]}
	if c.TieWordEmbeddings { // the head part: the embeddings, then the final norm (PartSegments)
		at := c.PartSegments(c.PartHead(), n)[1].At
		w.LMHead, w.NormF = w.Embed, slot[at:at+C:at+C]
	} else {
		w.LMHead = slot[C : C+E : C+E]
	}
	w.Layers = make([]Layer[float32], c.NumHiddenLayers)
	one := oneLayerViews(c, slot)
	for l := range w.Layers {
		w.Layers[l] = one
	}
	return w
}

// sharded says whether the model's parameters are sharded.
func (m *Model) sharded() bool { return m.Opt.ShardRanks > 0 }

// gather and release call the hooks on a sharded model.
func (m *Model) gather(p int, use Use) {
	if !m.sharded() {
		return
	}
	m.Dev.Sync()
	m.Shards.Gather(p, use)
	if use&UseParams != 0 && m.bf16 { // the bf16 copies are of the part the buffer held before
		m.layer16Of = -1
		if p == m.Config.PartHead() {
			m.Dev.ToBF16(m.lm16, m.Params.LMHead)
		}
	}
}

func (m *Model) release(p int, use Use) {
	if m.sharded() {
		m.Dev.Sync()
		m.Shards.Release(p, use)
	}
}

// LoadRanges reads the ranges of the full parameter arena (ParamSpecs'
// layout) from the HF model directory dir into dst (dst[i] receives
// ranges[i]): a sharded model's rank loads only its shards this way,
// holding at most one whole tensor besides them.
func LoadRanges(dir string, c *Config, ranges [][2]int, dst [][]float32) error {
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		return fmt.Errorf("load model %s: %w", dir, err)
	}
	defer st.Close()
	if err := checkTensors(c, st); err != nil {
		return fmt.Errorf("load model %s: %w", dir, err)
	}
	return fillRanges(c, ranges, dst, func(_ int, s ParamSpec, host []float32) error { return st.Float32(s.Name, host) })
}

// InitRandomRanges fills the ranges of the full arena as InitRandom fills
// them, without the rest.
func InitRandomRanges(c *Config, seed uint64, ranges [][2]int, dst [][]float32) {
	_ = fillRanges(c, ranges, dst, func(i int, s ParamSpec, host []float32) error {
		initRandomTensor(i, s, host, seed)
		return nil
	})
}

// fillRanges fills each range from the tensors overlapping it, reading a
// tensor at most once.
func fillRanges(c *Config, ranges [][2]int, dst [][]float32, read func(int, ParamSpec, []float32) error) error {
	var tmp []float32
	for k, s := range c.ParamSpecs() {
		lo, hi := s.Offset, s.Offset+s.Size()
		loaded := false
		for i, rg := range ranges {
			a, b := max(lo, rg[0]), min(hi, rg[1])
			if a >= b {
				continue
			}
			if !loaded {
				if cap(tmp) < s.Size() {
					tmp = make([]float32, s.Size())
				}
				tmp = tmp[:s.Size()]
				if err := read(k, s, tmp); err != nil {
					return err
				}
				loaded = true
			}
			copy(dst[i][a-rg[0]:b-rg[0]], tmp[a-lo:b-lo])
		}
	}
	return nil
}
