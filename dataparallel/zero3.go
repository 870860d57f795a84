package dataparallel

import (
	"context"
	"fmt"
	"math"

	"hone/collective"
	"hone/engine"
	"hone/optim"
)

// Sharded parameters (ZeRO stage 3). Each part of the model (the
// embeddings, each decoder layer, the final norm with the output head;
// engine.Config.PartRange) is cut into Size equal chunks, the last ones
// shorter; rank q keeps chunk q of every part: its fp32 parameters, its
// gradient and its AdamW moments, concatenated in part order. The model
// (engine.Options.ShardRanks) asks for one part at a time: Gather
// all-gathers the chunks into the model's gather buffer, Release
// reduce-scatters the part's gradient so each rank adds the sum of its
// chunk to its own gradient shard. A step's gradient is therefore the sum
// over ranks and micro-batches, as with Reducer, and the optimizer steps
// each rank's shard with the norm of the whole gradient.

// Sharded is one rank's shard of a model's parameters, and the model's
// engine.ShardHooks.
type Sharded struct {
	c     collective.Collective
	m     *engine.Model
	ctx   context.Context
	parts []shardPart
	// P and G are this rank's parameters and gradients, every part's
	// chunk in part order (see Chunks).
	P, G []float32
	pad  []float32 // a whole chunk, for a rank whose chunk is short
	err  error
	// frozen: the model trains a LoRA adapter on the sharded base, which
	// takes no gradients (G is nil; the adapter's are reduced by Reducer).
	frozen bool
}

// shardPart is one part's place: its full-arena range, the chunk size,
// this rank's chunk (n elements at off in P and G), and the segments the
// part gathers (engine.Config.PartSegments: its own range, and the tied
// head's embeddings too).
type shardPart struct {
	lo, hi, chunk, off, n int
	segs                  []shardSeg
}

// shardSeg is one gathered range: its chunk, this rank's chunk at off in P
// and G (n elements), and where it lands in the gather buffer.
type shardSeg struct{ chunk, off, n, at int }

// NewSharded allocates this rank's shards for model m, built with
// engine.Options.ShardRanks = c.Size(), and installs itself as m's hooks.
// The parameters start at zero: fill them (Ranges, Chunks) before the
// first pass.
func NewSharded(c collective.Collective, m *engine.Model) (*Sharded, error) {
	cfg, n := m.Config, c.Size()
	if m.Opt.ShardRanks != n {
		return nil, fmt.Errorf("sharded parameters: the model is built for %d ranks, the group has %d", m.Opt.ShardRanks, n)
	}
	if err := cfg.CheckShardable(); err != nil {
		return nil, err
	}
	s := &Sharded{c: c, m: m, ctx: context.Background(), frozen: m.Opt.LoRA != nil}
	total, maxChunk := 0, 0
	for p := range cfg.NumParts() {
		lo, hi := cfg.PartRange(p)
		ch := cfg.ShardChunk(p, n)
		a := min(hi-lo, c.Rank()*ch)
		b := min(hi-lo, a+ch)
		s.parts = append(s.parts, shardPart{lo: lo, hi: hi, chunk: ch, off: total, n: b - a})
		total += b - a
		maxChunk = max(maxChunk, ch)
	}
	for p := range s.parts {
		for _, sg := range cfg.PartSegments(p, n) {
			own := s.parts[p] // the part whose shard holds the segment
			for _, q := range s.parts {
				if q.lo == sg.Lo && q.hi == sg.Hi {
					own = q
				}
			}
			s.parts[p].segs = append(s.parts[p].segs, shardSeg{chunk: own.chunk, off: own.off, n: own.n, at: sg.At})
		}
	}
	s.P, s.pad = m.Dev.Alloc(total), m.Dev.Alloc(maxChunk)
	if !s.frozen {
		s.G = m.Dev.Alloc(total)
	}
	m.Shards = s
	return s, nil
}

// Ranges are this rank's full-arena ranges, one per part.
func (s *Sharded) Ranges() [][2]int {
	out := make([][2]int, len(s.parts))
	for i, p := range s.parts {
		a := p.lo + s.c.Rank()*p.chunk
		out[i] = [2]int{min(a, p.hi), min(a, p.hi) + p.n}
	}
	return out
}

// Chunks are the views of buf (P, G or an optimizer moment) holding each
// of Ranges.
func (s *Sharded) Chunks(buf []float32) [][]float32 {
	out := make([][]float32, len(s.parts))
	for i, p := range s.parts {
		out[i] = buf[p.off : p.off+p.n : p.off+p.n]
	}
	return out
}

// Specs are the parameter specs restricted to this rank's shard, with
// offsets into P: the optimizer's view of it (weight decay per tensor).
func (s *Sharded) Specs() []engine.ParamSpec {
	var out []engine.ParamSpec
	ranges := s.Ranges()
	for _, sp := range s.m.Config.ParamSpecs() {
		for i, rg := range ranges {
			a, b := max(sp.Offset, rg[0]), min(sp.Offset+sp.Size(), rg[1])
			if a < b {
				out = append(out, engine.ParamSpec{Name: sp.Name, Shape: []int{b - a}, Offset: s.parts[i].off + a - rg[0], Decay: sp.Decay})
			}
		}
	}
	return out
}

// Begin sets the context of the collectives the model's next passes
// make; call it before a step.
func (s *Sharded) Begin(ctx context.Context) { s.ctx = ctx }

// Err is the first error of a collective the hooks made.
func (s *Sharded) Err() error { return s.err }

// ZeroGrad clears this rank's gradient shard.
func (s *Sharded) ZeroGrad() {
	if s.G != nil {
		s.m.Dev.Zero(s.G)
	}
}

// Gather is engine.ShardHooks.Gather: all-gather part p's chunks.
func (s *Sharded) Gather(p int, use engine.Use) {
	sp := s.parts[p]
	n := s.c.Size()
	if use&engine.UseGrads != 0 && !s.frozen {
		last := sp.segs[len(sp.segs)-1]
		clear(s.m.Grads.Arena[:last.at+n*last.chunk]) // the padding too: Release reduces it
	}
	if use&engine.UseParams == 0 {
		return
	}
	for _, sg := range sp.segs {
		if s.err != nil {
			return
		}
		in := s.P[sg.off : sg.off+sg.n]
		if sg.n < sg.chunk {
			copy(s.pad, in)
			clear(s.pad[sg.n:sg.chunk])
			in = s.pad[:sg.chunk]
		}
		if err := s.c.AllGather(s.ctx, s.m.Params.Arena[sg.at:sg.at+n*sg.chunk], in); err != nil {
			s.err = fmt.Errorf("gather part %d of the parameters: %w", p, err)
		}
	}
}

// Release is engine.ShardHooks.Release: reduce-scatter part p's gradient
// and add this rank's chunk of the sum to G (a tied head's embedding
// gradient to the embeddings' chunk).
func (s *Sharded) Release(p int, use engine.Use) {
	if use&engine.UseGrads == 0 || s.frozen {
		return
	}
	n, me := s.c.Size(), s.c.Rank()
	for _, sg := range s.parts[p].segs {
		if s.err != nil {
			return
		}
		buf := s.m.Grads.Arena[sg.at : sg.at+n*sg.chunk]
		counts := make([]int, n)
		for i := range counts {
			counts[i] = sg.chunk
		}
		if err := s.c.ReduceScatter(s.ctx, buf, counts); err != nil {
			s.err = fmt.Errorf("reduce-scatter the gradients of part %d: %w", p, err)
			return
		}
		g, sum := s.G[sg.off:sg.off+sg.n], buf[me*sg.chunk:me*sg.chunk+sg.n]
		for i, x := range sum {
			g[i] += x
		}
	}
}

// GradNorm is the L2 norm of the whole gradient: every rank's shard's sum
// of squares, summed across ranks (as an fp32 pair, high and low parts).
func (s *Sharded) GradNorm(ctx context.Context) (float64, error) {
	sq := s.m.Dev.SumSquares(s.G)
	hi := float32(sq)
	pair := []float32{hi, float32(sq - float64(hi))}
	if err := s.c.AllReduce(ctx, pair); err != nil {
		return 0, fmt.Errorf("sum the gradient norm across ranks: %w", err)
	}
	return math.Sqrt(float64(pair[0]) + float64(pair[1])), nil
}

// NewAdamW is the optimizer of this rank's shard.
func (s *Sharded) NewAdamW(cfg optim.AdamWConfig) (*optim.AdamW, error) {
	return optim.NewAdamWRange(s.m.Dev, s.Specs(), 0, len(s.P), cfg)
}

// Step updates this rank's shard with o (made by NewAdamW), clipping by
// the whole gradient's norm. No parameters move: the next pass gathers
// them.
func (s *Sharded) Step(ctx context.Context, o *optim.AdamW, lr float64) (optim.StepResult, error) {
	norm, err := s.GradNorm(ctx)
	if err != nil {
		return optim.StepResult{}, err
	}
	return o.StepRange(s.m.Dev, s.P, s.G, norm, lr)
}

// SumLoss sums a rank's loss across ranks (as an fp32 pair, high and low
// parts, to keep most of its float64 precision).
func SumLoss(ctx context.Context, c collective.Collective, sum float64) (float64, error) {
	if c == nil || c.Size() < 2 {
		return sum, nil
	}
	hi := float32(sum)
	pair := []float32{hi, float32(sum - float64(hi))}
	if err := c.AllReduce(ctx, pair); err != nil {
		return 0, fmt.Errorf("sum the loss across ranks: %w", err)
	}
	return float64(pair[0]) + float64(pair[1]), nil
}

// GatherTo writes the whole parameter arena into dst on rank root (dst is
// ignored elsewhere), part by part through the model's gather buffer: for
// saving a sharded model. Every rank calls it.
func (s *Sharded) GatherTo(ctx context.Context, root int, dst []float32) error {
	s.ctx = ctx
	for p, sp := range s.parts {
		s.Gather(p, engine.UseParams)
		if s.err != nil {
			return s.err
		}
		if s.c.Rank() == root {
			at := sp.segs[len(sp.segs)-1].at // the part's own range is its last segment
			copy(dst[sp.lo:sp.hi], s.m.Params.Arena[at:at+sp.hi-sp.lo])
		}
	}
	return nil
}
