package engine

import (
	"errors"
	"fmt"

	"hone/safetensors"
)

// Sharded parameters (ZeRO stage 3 / FSDP style). With Options.ShardRanks
// N > 0 the model holds no copy of its parameters or gradients of its
// own: Params and Grads are views of gather buffers, one pair big enough
// for the largest part (the embeddings, one decoder layer, or the final
// norm with the output head) and one pair for a decoder layer. Before a
// part runs the model calls its ShardHooks' Gather, which fills the views
// (all-gathering the ranks' shards); after it, Release, which takes the
// part's gradients (reduce-scattering them into the ranks' shards).
// Consecutive parts of a pass use different buffers where they can, so
// the model asks the hooks to Prefetch the next part into the other
// buffer as soon as it has gathered one, and the hooks may take a part's
// gradients while the next part computes. The model knows nothing about
// ranks or collectives: the hooks (train's) do.

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
// goroutine running it, in an order that depends only on the config, the
// options and the kind of pass (the same on every rank): Gather(p), maybe
// Prefetch(q), Release(p), Gather(q), ... where the q of a Prefetch is
// always the part and buffer of the next Gather of parameters. They cannot
// fail the model's call: an implementation keeps its first error for its
// caller to check.
type ShardHooks interface {
	// Gather makes params hold part p's parameters, each of its segments
	// (PartSegments) at its offset (with UseParams), and zeroes the
	// part's gradients in grads (with UseGrads). It returns once they
	// are there: after the Prefetch of p into params if one came first,
	// and after the last Release that passed grads has taken them.
	Gather(p int, use Use, params, grads []float32)
	// Prefetch starts gathering part p's parameters into params and may
	// return before they are there; the model's next Gather with
	// UseParams is of p into params. No part in use occupies params
	// meanwhile.
	Prefetch(p int, params []float32)
	// PrefetchNext comes once a training pass no longer reads
	// parameters: the next pass's first Gather will be of part p into
	// params, which nothing occupies until then. The hooks may start
	// it now, when the parameters do not change before that pass (a
	// step's next micro-batch), or ignore it.
	PrefetchNext(p int, params []float32)
	// Release ends the use of part p: with UseGrads, grads holds this
	// pass's gradients of the part. The hooks may take them after
	// returning; the model writes grads again only after a Gather that
	// passes it.
	Release(p int, use Use, grads []float32)
}

// shardState is a sharded model's gather buffers and its pass's plan.
// Buffer 0 holds any part, buffer 1 a decoder layer; a frozen base
// (LoRA) has one gradient buffer, which nothing reads (grads[1] is
// grads[0]).
type shardState struct {
	params, grads [2]*Weights
	plan          []shardStep // the pass's gathers in order
	next          int         // plan's next gather
	cur           int         // the buffer of the part in use
	last          int         // a training pass's last gather of parameters (-1: not one)
}

// shardStep is one gather of a pass: the part, its use and its buffer.
type shardStep struct {
	part int
	use  Use
	buf  int
}

// layerSlot is a layer gather buffer's size for n ranks: one layer
// rounded up to n equal chunks (0 without layers).
func (c *Config) layerSlot(n int) int {
	if c.NumHiddenLayers == 0 {
		return 0
	}
	return n * c.ShardChunk(0, n)
}

// newShardState allocates the gather buffers for n ranks.
func newShardState(c *Config, dev Device, n int, frozen bool) shardState {
	var s shardState
	slot, layer := c.shardSlot(n), c.layerSlot(n)
	s.params[0], s.grads[0] = newShardedWeights(c, dev.Alloc(slot), n), newShardedWeights(c, dev.Alloc(slot), n)
	s.params[1], s.grads[1] = newLayerWeights(c, dev.Alloc(layer)), s.grads[0]
	if !frozen {
		s.grads[1] = newLayerWeights(c, dev.Alloc(layer))
	}
	return s
}

// buffers are the distinct gather buffers, for Close.
func (s *shardState) buffers() [][]float32 {
	out := [][]float32{s.params[0].Arena, s.params[1].Arena, s.grads[0].Arena}
	if s.grads[1] != s.grads[0] {
		out = append(out, s.grads[1].Arena)
	}
	return out
}

// GatherBuffer is the gather buffer every part fits in, for hooks that
// gather parts outside a pass (saving a sharded model).
func (m *Model) GatherBuffer() []float32 { return m.shard.params[0].Arena }

// newLayerWeights views a layer-sized gather buffer as every decoder
// layer (it holds no other part).
func newLayerWeights(c *Config, buf []float32) *Weights {
	w := &Weights{Arena: buf, Layers: make([]Layer[float32], c.NumHiddenLayers)}
	if c.NumHiddenLayers > 0 {
		one := oneLayerViews(c, buf)
		for l := range w.Layers {
			w.Layers[l] = one
		}
	}
	return w
}

// planShardPass plans the gathers of a pass (ForwardBackward's with grad)
// as forwardTrunk, backwardLayers and ForwardBackward make them, and
// their buffers: consecutive gathers in different buffers, so each can be
// prefetched while the one before computes. Where that is impossible (the
// embeddings and the head fit only buffer 0, and an even number of layers
// runs between them) a gather shares its predecessor's buffer and is not
// prefetched: preferably the first layer's, after the embedding lookup,
// which is too short to hide a gather behind anyway.
func (m *Model) planShardPass(grad bool) {
	c := m.Config
	L, E, H := c.NumHiddenLayers, c.PartEmbed(), c.PartHead()
	plan := []shardStep{{part: E, use: UseParams}}
	for l := range L {
		plan = append(plan, shardStep{part: l, use: UseParams})
	}
	if !grad {
		m.shard.plan = assignShardBuffers(append(plan, shardStep{part: H, use: UseParams}), L)
		m.shard.next, m.shard.last = 0, -1
		return
	}
	both := UseParams | UseGrads
	plan = append(plan, shardStep{part: H, use: both})
	if p, ok := m.Opt.residualPlan(c); ok {
		for j := len(p.ends) - 1; j >= 1; j-- {
			start, end := p.ends[j-1], p.ends[j]
			if j == 1 {
				plan = append(plan, shardStep{part: E, use: UseParams})
			}
			for l := start; l < end-1; l++ {
				plan = append(plan, shardStep{part: l, use: UseParams})
			}
			for l := end - 1; l >= start; l-- {
				plan = append(plan, shardStep{part: l, use: both})
			}
		}
	} else {
		for l := L - 1; l >= 0; l-- {
			plan = append(plan, shardStep{part: l, use: both})
		}
	}
	if !m.frozen() {
		plan = append(plan, shardStep{part: E, use: UseGrads})
	}
	m.shard.plan, m.shard.next = assignShardBuffers(plan, L), 0
	for i, st := range plan {
		if st.use&UseParams != 0 {
			m.shard.last = i
		}
	}
}

// assignShardBuffers gives each gather of plan a buffer (parts below L,
// the layers, fit either; the others only buffer 0) so that as few
// gathers as possible share their predecessor's buffer, not counting a
// share after a forward embedding lookup (see planShardPass). A small
// dynamic program over the two buffers.
func assignShardBuffers(plan []shardStep, L int) []shardStep {
	const inf = 1 << 30
	cost := make([][2]int, len(plan))
	from := make([][2]int, len(plan))
	for i, st := range plan {
		for b := range 2 {
			cost[i][b] = inf
			if b == 1 && st.part >= L {
				continue
			}
			if i == 0 {
				cost[i][b] = 0
				continue
			}
			for pb := range 2 {
				x := cost[i-1][pb]
				if pb == b && !(plan[i-1].part == L && plan[i-1].use == UseParams) {
					x++ // shares the buffer: not prefetched
				}
				if x < cost[i][b] {
					cost[i][b], from[i][b] = x, pb
				}
			}
		}
	}
	b := 0
	if n := len(plan); cost[n-1][1] < cost[n-1][0] {
		b = 1
	}
	for i := len(plan) - 1; i >= 0; i-- {
		plan[i].buf = b
		b = from[i][b]
	}
	return plan
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

// gather and release call the hooks on a sharded model, following the
// pass's plan (planShardPass): gather points Params and Grads at the
// part's buffers and prefetches the next planned part. Once a training
// pass's last part that reads parameters no longer needs buffer 0 (at its
// gather when it uses the other buffer, else at its release), they offer
// the hooks the next pass's first gather, the embeddings into buffer 0.
func (m *Model) gather(p int, use Use) {
	if !m.sharded() {
		return
	}
	if m.nf4 != nil {
		m.gatherNF4(p)
		return
	}
	s := &m.shard
	if s.next >= len(s.plan) || s.plan[s.next].part != p || s.plan[s.next].use != use {
		panic(fmt.Sprintf("engine: a sharded pass gathers part %d (use %d) out of its planned order", p, use))
	}
	st := s.plan[s.next]
	s.next++
	m.Dev.Sync()
	s.cur = st.buf
	m.Params, m.Grads = s.params[st.buf], s.grads[st.buf]
	m.Shards.Gather(p, use, m.Params.Arena, m.Grads.Arena)
	if s.next < len(s.plan) {
		if nx := s.plan[s.next]; nx.use&UseParams != 0 && nx.buf != st.buf {
			m.Shards.Prefetch(nx.part, s.params[nx.buf].Arena)
		}
	}
	if s.next-1 == s.last && st.buf != 0 {
		m.Shards.PrefetchNext(m.Config.PartEmbed(), s.params[0].Arena)
	}
	if use&UseParams != 0 && m.bf16 { // the bf16 copies are of the part the buffer held before
		m.layer16Of = -1
		if p == m.Config.PartHead() {
			m.Dev.ToBF16(m.lm16, m.Params.LMHead)
		}
	}
}

func (m *Model) release(p int, use Use) {
	if !m.sharded() {
		return
	}
	if m.nf4 != nil {
		m.releaseNF4(p, use)
		return
	}
	s := &m.shard
	m.Dev.Sync()
	m.Shards.Release(p, use, s.grads[s.cur].Arena)
	if s.next-1 == s.last && s.cur == 0 {
		m.Shards.PrefetchNext(m.Config.PartEmbed(), s.params[0].Arena)
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
