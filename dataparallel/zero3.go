package dataparallel

import (
	"context"
	"fmt"
	"math"
	"sync"

	"hone/collective"
	"hone/engine"
	"hone/optim"
)

// Sharded parameters (ZeRO stage 3). Each part of the model (the
// embeddings, each decoder layer, the final norm with the output head;
// engine.Config.PartRange) is cut into Size equal chunks, the last ones
// shorter; rank q keeps chunk q of every part: its fp32 parameters, its
// gradient and its optimizer state (AdamW's moments or LionW's moment),
// concatenated in part order. The model (engine.Options.ShardRanks) asks
// for one part at a time: Gather all-gathers the chunks into one of the
// model's gather buffers, Release reduce-scatters the part's gradient so
// each rank adds the sum of its chunk to its own gradient shard. A step's
// gradient is therefore the sum over ranks and micro-batches, as with
// Reducer, and the optimizer steps each rank's shard with the norm of the
// whole gradient.
//
// The collectives run on one goroutine, in the order the model asks for
// them (the same on every rank): a Prefetch's all-gather and a Release's
// reduce-scatter run while the model computes, and a Gather waits only
// for what its buffers still take part in. Err waits for all of them, so
// the caller's own collectives (the loss, the norm) never run beside them.

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
	pad  []float32 // a whole chunk, for a rank whose chunk is short (the comm goroutine's)
	// frozen: the model trains a LoRA adapter on the sharded base, which
	// takes no gradients (G is nil; the adapter's are reduced by Reducer).
	frozen bool
	// The comm goroutine's queue: ops run in order; issued and done
	// count them; err is the first op's error (later ops are skipped).
	mu           sync.Mutex
	cond         *sync.Cond
	queue        []func() error
	issued, done int
	running      bool
	err          error
	pre          *prefetch        // the Prefetch the next Gather of parameters must match (or, spare, may)
	gradBusy     map[*float32]int // per gradient buffer, the op of the last Release that passed it
	ahead        int              // passes still to come on the same parameters (Passes)
}

// prefetch is an all-gather in flight: part p into params, op number seq.
type prefetch struct {
	p      int
	params []float32
	seq    int
	spare  bool // Step's, for a next pass that may not come: another Gather drops it
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
	s := &Sharded{c: c, m: m, ctx: context.Background(), frozen: m.Opt.LoRA != nil, gradBusy: map[*float32]int{}}
	s.cond = sync.NewCond(&s.mu)
	if m.Opt.QuantizeBase != "" {
		s.shardNF4()
		return s, nil
	}
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

// shardNF4 sets s up for a sharded NF4 base (a QLoRA run): the parts
// are the decoder layers, each this rank's equal chunk of the layer's NF4
// data (engine.Model.NF4Shard), gathered into the model's NF4 gather
// buffers; the unquantized tensors (and NF4 embeddings) are whole on
// every rank.
func (s *Sharded) shardNF4() {
	cfg, m := s.m.Config, s.m
	s.P = m.NF4Shard(s.c.Rank())
	chunk := len(s.P) / max(cfg.NumHiddenLayers, 1)
	s.parts = make([]shardPart, cfg.NumParts()) // the embeddings and head: nothing to gather
	for l := range cfg.NumHiddenLayers {
		s.parts[l] = shardPart{chunk: chunk, off: l * chunk, n: chunk, segs: []shardSeg{{chunk: chunk, off: l * chunk, n: chunk}}}
	}
	m.Shards = s
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

// Passes says that the model's next n training passes run on the same
// parameters (a step's micro-batches): each but the last starts the next
// one's first gather while its own last parts compute (PrefetchNext).
func (s *Sharded) Passes(n int) { s.ahead = n - 1 }

// Err waits for the collectives the hooks started and returns the first
// one's error. Call it after the model's passes, before anything else
// uses the group or reads G or P.
func (s *Sharded) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.done < s.issued {
		s.cond.Wait()
	}
	return s.err
}

// ZeroGrad clears this rank's gradient shard.
func (s *Sharded) ZeroGrad() {
	_ = s.Err() // no reduce-scatter still adds to it
	if s.G != nil {
		s.m.Dev.Zero(s.G)
	}
}

// enqueue hands op to the comm goroutine (starting it when idle) and
// returns its number.
func (s *Sharded) enqueue(op func() error) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, op)
	s.issued++
	if !s.running {
		s.running = true
		go s.serve()
	}
	return s.issued
}

// serve runs the queued ops in order until the queue is empty; after an
// error it only counts them (the group is broken).
func (s *Sharded) serve() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.queue) > 0 {
		op := s.queue[0]
		s.queue = s.queue[1:]
		failed := s.err != nil
		s.mu.Unlock()
		var err error
		if !failed {
			err = op()
		}
		s.mu.Lock()
		if err != nil && s.err == nil {
			s.err = err
		}
		s.done++
		s.cond.Broadcast()
	}
	s.running = false
}

// wait returns once op seq has run.
func (s *Sharded) wait(seq int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.done < seq {
		s.cond.Wait()
	}
}

// gatherOp is the all-gather of part p's chunks into params.
func (s *Sharded) gatherOp(ctx context.Context, p int, params []float32) func() error {
	return func() error {
		n := s.c.Size()
		for _, sg := range s.parts[p].segs {
			in := s.P[sg.off : sg.off+sg.n]
			if sg.n < sg.chunk {
				copy(s.pad, in)
				clear(s.pad[sg.n:sg.chunk])
				in = s.pad[:sg.chunk]
			}
			if err := s.c.AllGather(ctx, params[sg.at:sg.at+n*sg.chunk], in); err != nil {
				return fmt.Errorf("gather part %d of the parameters: %w", p, err)
			}
		}
		return nil
	}
}

// Gather is engine.ShardHooks.Gather: all-gather part p's chunks (or
// wait for their Prefetch) and zero its gradient buffer.
func (s *Sharded) Gather(p int, use engine.Use, params, grads []float32) {
	var pre *prefetch
	if use&engine.UseParams != 0 { // a Gather of gradients only leaves the next pass's prefetch
		pre, s.pre = s.pre, nil
	}
	if pre != nil && (pre.p != p || &pre.params[0] != &params[0]) {
		if !pre.spare {
			panic(fmt.Sprintf("dataparallel: part %d prefetched, part %d gathered", pre.p, p))
		}
		pre = nil // Step waited for it
	}
	seq := 0
	grad := use&engine.UseGrads != 0 && !s.frozen
	if grad {
		seq = s.gradBusy[&grads[0]] // its last reduce-scatter still reads it
	}
	if use&engine.UseParams != 0 {
		if pre == nil {
			pre = &prefetch{p: p, params: params, seq: s.enqueue(s.gatherOp(s.ctx, p, params))}
		}
		seq = max(seq, pre.seq)
	}
	s.wait(seq)
	if grad {
		sp := s.parts[p]
		last := sp.segs[len(sp.segs)-1]
		clear(grads[:last.at+s.c.Size()*last.chunk]) // the padding too: Release reduces it
	}
}

// Prefetch is engine.ShardHooks.Prefetch: start all-gathering part p's
// chunks into params.
func (s *Sharded) Prefetch(p int, params []float32) {
	if s.pre != nil && !s.pre.spare {
		panic(fmt.Sprintf("dataparallel: part %d prefetched while part %d's prefetch is not gathered", p, s.pre.p))
	}
	s.pre = &prefetch{p: p, params: params, seq: s.enqueue(s.gatherOp(s.ctx, p, params))}
}

// PrefetchNext is engine.ShardHooks.PrefetchNext: Prefetch, when
// another pass on the same parameters follows (Passes).
func (s *Sharded) PrefetchNext(p int, params []float32) {
	if s.ahead > 0 {
		s.ahead--
		s.Prefetch(p, params)
	}
}

// Release is engine.ShardHooks.Release: start reduce-scattering part p's
// gradient in grads, adding this rank's chunk of the sum to G (a tied
// head's embedding gradient to the embeddings' chunk).
func (s *Sharded) Release(p int, use engine.Use, grads []float32) {
	if use&engine.UseGrads == 0 || s.frozen {
		return
	}
	ctx := s.ctx
	s.gradBusy[&grads[0]] = s.enqueue(func() error {
		n, me := s.c.Size(), s.c.Rank()
		for _, sg := range s.parts[p].segs {
			buf := grads[sg.at : sg.at+n*sg.chunk]
			counts := make([]int, n)
			for i := range counts {
				counts[i] = sg.chunk
			}
			if err := s.c.ReduceScatter(ctx, buf, counts); err != nil {
				return fmt.Errorf("reduce-scatter the gradients of part %d: %w", p, err)
			}
			g, sum := s.G[sg.off:sg.off+sg.n], buf[me*sg.chunk:me*sg.chunk+sg.n]
			for i, x := range sum {
				g[i] += x
			}
		}
		return nil
	})
}

// GradNorm is the L2 norm of the whole gradient: every rank's shard's sum
// of squares, summed across ranks (as an fp32 pair, high and low parts).
func (s *Sharded) GradNorm(ctx context.Context) (float64, error) {
	if err := s.Err(); err != nil {
		return 0, err
	}
	sq := s.m.Dev.SumSquares(s.G)
	hi := float32(sq)
	pair := []float32{hi, float32(sq - float64(hi))}
	if err := s.c.AllReduce(ctx, pair); err != nil {
		return 0, fmt.Errorf("sum the gradient norm across ranks: %w", err)
	}
	return math.Sqrt(float64(pair[0]) + float64(pair[1])), nil
}

// NewOptimizer is the optimizer of this rank's shard, made by newOpt
// (optim.AdamWRanges, optim.LionWRanges): one range per part, the
// embeddings' updated first (see Step).
func (s *Sharded) NewOptimizer(newOpt optim.NewRanges) (optim.RangeOptimizer, error) {
	var ranges [][2]int
	for _, p := range s.parts {
		ranges = append(ranges, [2]int{p.off, p.off + p.n})
	}
	o, err := newOpt(s.m.Dev, s.Specs(), ranges)
	if err == nil {
		o.UpdateFirst(s.m.Config.PartEmbed())
	}
	return o, err
}

// Step updates this rank's shard with o (made by NewOptimizer), clipping
// by the whole gradient's norm. No parameters move: the next pass gathers
// them. Its first gather, the embeddings' into the model's large buffer,
// starts as soon as they are updated, while the other parts are, and
// Step returns once it is done (the caller's collectives follow); a Gather
// of another part drops it.
func (s *Sharded) Step(ctx context.Context, o optim.RangeOptimizer, lr float64) (optim.StepResult, error) {
	norm, err := s.GradNorm(ctx)
	if err != nil {
		return optim.StepResult{}, err
	}
	s.ahead, s.pre = 0, nil // a prefetch left over (more Passes than ran) is stale now
	embed := s.m.Config.PartEmbed()
	next := func() {
		if s.pre == nil {
			buf := s.m.GatherBuffer()
			s.pre = &prefetch{p: embed, params: buf, seq: s.enqueue(s.gatherOp(ctx, embed, buf)), spare: true}
		}
	}
	res, err := o.StepRangesEach(s.m.Dev, s.P, s.G, nil, norm, lr, func(k int) {
		if k == embed {
			next()
		}
	})
	if err != nil {
		return res, err
	}
	next() // this rank's chunk of the embeddings is empty: the others gather still
	return res, s.Err()
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
	buf := s.m.GatherBuffer()
	for p, sp := range s.parts {
		s.Gather(p, engine.UseParams, buf, nil)
		if err := s.Err(); err != nil {
			return err
		}
		if s.c.Rank() == root {
			at := sp.segs[len(sp.segs)-1].at // the part's own range is its last segment
			copy(dst[sp.lo:sp.hi], buf[at:at+sp.hi-sp.lo])
		}
	}
	return nil
}
