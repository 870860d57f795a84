package dataparallel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"unsafe"

	"hone/collective"
	"hone/engine"
	"hone/optim"
)

// Zero1 shards the optimizer state of a full fine-tune (ZeRO stage 1)
// so that it also moves fewer bytes than an allreduce of the gradients.
// The arena after the embeddings is cut into buckets (each range the
// Reducer hands over, the head, each layer, the rest, in pieces of at most
// Bucket floats), and each bucket into one piece per rank, split evenly at
// even offsets (Zero1Layout); a rank's shard is its piece of every bucket.
// Each bucket's gradient is reduce-scattered as soon as the backward pass
// has finished it: each rank receives only its piece's sum. Each rank
// updates the embeddings and its shard (AdamW or LionW, clipping by the
// whole gradient's norm), piece by piece, and each bucket is all-gathered
// as soon as the ranks have updated their pieces of it (they update them
// in the same order and at about the same time): the bf16 copy that the
// matrix products read, two halves a float, and the fp32 values only of
// the tensors that the passes read in fp32 (norms, biases; all of them
// without a bf16 copy), every rank's part padded to the largest (Gloo's
// all-gather takes equal parts). An untied embedding matrix, whose
// gradient is sparse (Reducer reduces it by rows), is not sharded: every
// rank updates it, so no rank sends it.
//
// With a bf16 copy, the fp32 matrices outside a rank's shard are therefore
// stale after a step: call SyncParams before reading them (a checkpoint,
// the final model).
//
// Numerics: every gradient element is summed once, on the rank whose piece
// holds it, and its updated weight is copied to the others, so every rank
// holds the same weights. The sum's order is the reduce-scatter's (Gloo:
// see collective/gloo), which for more than two ranks need not be the
// allreduce's: the weights are those of plain data parallelism with the
// gradients summed in another order.
type Zero1 struct {
	c   collective.Collective
	m   *engine.Model
	lay *Zero1Layout
	// byLo finds a bucket by its start; mine is this rank's pieces, one
	// per bucket (some possibly empty), in arena order.
	byLo map[int]int
	mine [][2]int
	// in and out are the all-gathers' scratch: one rank's part, and all
	// (Zero1Rank plans them).
	in, out []float32
	O       optim.RangeOptimizer
}

// Zero1Layout is how Zero1 cuts an arena over its ranks.
type Zero1Layout struct {
	// Front is [0, Front): the embeddings every rank updates (0 when
	// they are tied or the layout is not known).
	Front int
	// Buckets cover [Front, arena), in arena order.
	Buckets []Zero1Bucket
}

// Zero1Bucket is one bucket, [Lo, Hi) of the arena: rank q's piece is
// [Lo+At[q], Lo+At[q+1]), Counts[q] floats (the reduce-scatter's counts).
type Zero1Bucket struct {
	Lo, Hi     int
	Counts, At []int
	// Max is the largest piece; FP32[q] the ranges of rank q's piece that
	// the passes read in fp32 (with a bf16 copy).
	Max  int
	FP32 [][][2]int
	// Slot is the floats each rank hands the step's all-gather of the
	// bucket: with a bf16 copy, the largest piece's halves packed two a
	// float (W16 floats), then the largest of the ranks' fp32 ranges;
	// without, the largest piece.
	Slot, W16 int
}

// NewZero1Layout cuts an arena of n floats laid out by specs (a model of
// layers decoder layers, its embedding matrix at embed, tied or not to
// the output head, with a bf16 copy or not) over ranks ranks, in buckets
// of at most bucket floats.
func NewZero1Layout(specs []engine.ParamSpec, n, layers int, embed [2]int, tied, p16 bool, ranks, bucket int) *Zero1Layout {
	lr, rest := layerRanges(specs, n, layers)
	lay := &Zero1Layout{}
	if len(lr) > 0 && !tied && len(rest) > 0 && rest[0] == embed && embed[0] == 0 {
		lay.Front = embed[1]
	}
	// The tensors read in fp32 (their part after the front), sorted.
	var f32 [][2]int
	for _, s := range specs {
		lo, hi := s.Offset, s.Offset+s.Size()
		if p16 && hi > lay.Front && (len(s.Shape) != 2 || lo == embed[0]) {
			f32 = append(f32, [2]int{max(lo, lay.Front), hi})
		}
	}
	slices.SortFunc(f32, func(a, b [2]int) int { return a[0] - b[0] })
	ranges := append(slices.Clone(rest), lr...)
	slices.SortFunc(ranges, func(a, b [2]int) int { return a[0] - b[0] })
	for _, rg := range ranges {
		for lo := max(rg[0], lay.Front); lo < rg[1]; lo += bucket {
			hi := min(lo+bucket, rg[1])
			b := Zero1Bucket{Lo: lo, Hi: hi, Counts: pieceCounts(hi-lo, ranks), FP32: make([][][2]int, ranks)}
			b.At = collective.Offsets(b.Counts)
			b.Max = slices.Max(b.Counts)
			b.Slot = b.Max
			if p16 {
				most := 0
				for q := range ranks {
					a, z := lo+b.At[q], lo+b.At[q+1]
					k, size := sort.Search(len(f32), func(i int) bool { return f32[i][1] > a }), 0
					for ; k < len(f32) && f32[k][0] < z; k++ {
						x, y := max(a, f32[k][0]), min(z, f32[k][1])
						b.FP32[q] = append(b.FP32[q], [2]int{x, y})
						size += y - x
					}
					most = max(most, size)
				}
				b.W16 = (b.Max + 1) / 2
				b.Slot = b.W16 + most
			}
			lay.Buckets = append(lay.Buckets, b)
		}
	}
	return lay
}

// pieceCounts splits a bucket of n floats over ranks ranks evenly in
// pairs (so pieces start at even offsets), the last rank taking an odd
// float.
func pieceCounts(n, ranks int) []int {
	c := collective.EvenCounts(n/2, ranks)
	for q := range c {
		c[q] *= 2
	}
	c[ranks-1] += n % 2
	return c
}

// Pieces are rank q's pieces, one per bucket (possibly empty), in arena
// order: its shard. Its optimizer state (O.State()) holds the
// embeddings' [0, Front()) and then these, one after another.
func (l *Zero1Layout) Pieces(q int) [][2]int {
	out := make([][2]int, len(l.Buckets))
	for i, b := range l.Buckets {
		out[i] = [2]int{b.Lo + b.At[q], b.Lo + b.At[q+1]}
	}
	return out
}

// slot is the floats of a rank's part of the largest all-gather (Step's,
// or SyncParams' fp32 pieces).
func (l *Zero1Layout) slot() int {
	slot := 0
	for _, b := range l.Buckets {
		slot = max(slot, b.Slot, b.Max)
	}
	return slot
}

// Zero1LayoutFor is NewZero1's layout for a model of config c built with
// opt, over ranks ranks in buckets of bucket floats.
func Zero1LayoutFor(c *engine.Config, opt engine.Options, ranks, bucket int) *Zero1Layout {
	lo, hi := c.PartRange(c.PartEmbed())
	p16 := opt.BF16 && !opt.CompactBF16 && !opt.FrozenBF16 // the model holds a whole bf16 copy
	return NewZero1Layout(c.ParamSpecs(), int(c.NumParams()), c.NumHiddenLayers, [2]int{lo, hi}, c.TieWordEmbeddings, p16, ranks, bucket)
}

// Zero1Rank plans (engine.Options.Rank) the largest rank of Zero1 over
// ranks ranks (full fine-tuning): the model's plan with the optimizer
// state (engine.Options.OptimizerStates buffers: AdamW's two moments,
// LionW's one) of the embeddings and the rank's pieces instead of all,
// and the collectives' buffers: the all-gathers' scratch, one rank's
// part of the largest and every rank's (exchange_scratch), and the Gloo
// shim's reduce-scatter receive buffer, the largest piece
// (collective_scratch; collective/gloo). Fit with it turns on only the
// savings a rank needs. It is nil where a run of a model built with opt
// does not use Zero1 (zero1Shards), so a run that asks for a sharded
// optimizer uses Zero1 exactly when its plan's Rank is set.
func Zero1Rank(ranks int, opt engine.Options) engine.RankPlanner {
	if !zero1Shards(ranks, opt) {
		return nil
	}
	return zero1Rank{ranks, Bucket}
}

// zero1Shards says whether Zero1 shards the optimizer state of a model
// built with opt over ranks ranks: full fine-tuning over 2 or more. A
// LoRA run's state is small and whole on every rank; with sharded
// parameters (ShardRanks) the model plans its shard of the state.
func zero1Shards(ranks int, opt engine.Options) bool {
	return ranks > 1 && opt.LoRA == nil && opt.ShardRanks == 0
}

type zero1Rank struct{ ranks, bucket int }

func (z zero1Rank) RankPlan(c *engine.Config, opt engine.Options, plan engine.MemoryPlan) engine.MemoryPlan {
	// Zero1Rank checked the run's options, but a refusal's advice plans a
	// LoRA run with them (Rank kept): its adapter's state is not sharded.
	if !zero1Shards(z.ranks, opt) {
		return plan
	}
	lay := Zero1LayoutFor(c, opt, z.ranks, z.bucket)
	shard, piece := 0, 0
	for q := range z.ranks {
		n := 0
		for _, b := range lay.Buckets {
			n += b.Counts[q]
		}
		shard = max(shard, n)
	}
	for _, b := range lay.Buckets {
		piece = max(piece, b.Max)
	}
	plan.PeakBytes -= plan.Parts[engine.PartOptimizer]
	plan.Parts[engine.PartOptimizer] = 4 * opt.OptimizerBuffers() * int64(lay.Front+shard)
	plan.Parts[engine.PartExchangeScratch] = 4 * int64(z.ranks+1) * int64(lay.slot())
	plan.Parts[engine.PartCollectiveScratch] = 4 * int64(piece)
	plan.PeakBytes += plan.Parts[engine.PartOptimizer] + plan.Parts[engine.PartExchangeScratch] + plan.Parts[engine.PartCollectiveScratch]
	return plan
}

// NewZero1 shards the optimizer state of m (full fine-tuning) over c's
// ranks: newOpt (optim.AdamWRanges, optim.LionWRanges) makes this rank's.
func NewZero1(c collective.Collective, m *engine.Model, newOpt optim.NewRanges) (*Zero1, error) {
	return newZero1(c, m, newOpt, Bucket)
}

// newZero1 is NewZero1 with buckets of bucket floats.
func newZero1(c collective.Collective, m *engine.Model, newOpt optim.NewRanges, bucket int) (*Zero1, error) {
	if m.Opt.LoRA != nil || m.Opt.FrozenBF16 || m.Opt.ShardRanks > 1 {
		return nil, errors.New("zero1: full fine-tuning of an unsharded model only")
	}
	specs := m.Config.ParamSpecs()
	lay := NewZero1Layout(specs, len(m.Params.Arena), m.Config.NumHiddenLayers, embedRange(m), m.Config.TieWordEmbeddings,
		m.LowPrecisionParams() != nil, c.Size(), bucket)
	z := &Zero1{c: c, m: m, lay: lay, byLo: map[int]int{}, mine: lay.Pieces(c.Rank())}
	for i, b := range lay.Buckets {
		z.byLo[b.Lo] = i
	}
	slot := lay.slot()
	z.in, z.out = m.Dev.Alloc(slot), m.Dev.Alloc(slot*c.Size())
	var err error
	z.O, err = newOpt(m.Dev, specs, append([][2]int{{0, lay.Front}}, z.mine...))
	return z, err
}

// Front is [0, Front()): the embeddings every rank updates.
func (z *Zero1) Front() int { return z.lay.Front }

// Pieces are rank q's shard (see Zero1Layout.Pieces).
func (z *Zero1) Pieces(q int) [][2]int { return z.lay.Pieces(q) }

// Start starts the reduction of one step's gradients (see Reducer): the
// embeddings' to every rank, each bucket's pieces to their ranks.
func (z *Zero1) Start(ctx context.Context) *Reducer {
	g := Start(ctx, z.c, z.m, nil)
	if g != nil {
		g.zero = z
	}
	return g
}

// reduceScatter sums the gradients [lo, hi) across ranks, Zero1's buckets
// reduce-scattered so that each rank receives its pieces' sums (the rest
// of the range is scratch afterwards); the embeddings before the front
// are allreduced.
func (g *Reducer) reduceScatter(lo, hi int) error {
	z := g.zero
	if f := min(hi, z.lay.Front); lo < f {
		if err := allReduce(g.ctx, g.c, g.grads[lo:f]); err != nil {
			return err
		}
		lo = f
	}
	for lo < hi {
		i, ok := z.byLo[lo]
		if !ok || z.lay.Buckets[i].Hi > hi {
			return fmt.Errorf("zero1: no bucket of the shards starts at %d (reducing [%d, %d))", lo, lo, hi)
		}
		b := &z.lay.Buckets[i]
		if err := g.c.ReduceScatter(g.ctx, g.grads[b.Lo:b.Hi], b.Counts); err != nil {
			return err
		}
		lo = b.Hi
	}
	return nil
}

// GradNorm is the whole gradient's L2 norm after the reduction: every
// shard's sum of squares (piece by piece, added in float64), rank 0's with
// the embeddings' term (which every rank holds) added first, gathered and
// added in float64 in rank order on every rank.
func (z *Zero1) GradNorm(ctx context.Context) (float64, error) {
	g := z.m.Grads.Arena
	sq := 0.0
	if z.c.Rank() == 0 && z.lay.Front > 0 {
		sq = z.m.Dev.SumSquares(g[:z.lay.Front])
	}
	for _, pc := range z.mine {
		if pc[0] < pc[1] {
			sq += z.m.Dev.SumSquares(g[pc[0]:pc[1]])
		}
	}
	terms, err := allGather64(ctx, z.c, sq)
	if err != nil {
		return 0, fmt.Errorf("sum the gradient norm across ranks: %w", err)
	}
	sq = 0
	for _, t := range terms {
		sq += t
	}
	return math.Sqrt(sq), nil
}

// allGather64 gives every rank every rank's x, exactly: its bits travel
// as two floats that no rank adds.
func allGather64(ctx context.Context, c collective.Collective, x float64) ([]float64, error) {
	b := math.Float64bits(x)
	in := []float32{math.Float32frombits(uint32(b)), math.Float32frombits(uint32(b >> 32))}
	out := make([]float32, 2*c.Size())
	if err := c.AllGather(ctx, out, in); err != nil {
		return nil, err
	}
	xs := make([]float64, c.Size())
	for q := range xs {
		xs[q] = math.Float64frombits(uint64(math.Float32bits(out[2*q])) | uint64(math.Float32bits(out[2*q+1]))<<32)
	}
	return xs, nil
}

// Step updates the embeddings and this rank's shard, clipping by the
// whole gradient's norm, and gives every rank every shard (the bf16 copy
// and the fp32 tensors read in fp32; see Zero1): a goroutine all-gathers
// each bucket as soon as the optimizer has updated this rank's piece of
// it.
func (z *Zero1) Step(ctx context.Context, lr float64) (optim.StepResult, error) {
	norm, err := z.GradNorm(ctx)
	if err != nil || math.IsNaN(norm) || math.IsInf(norm, 0) {
		// The norm is the same on every rank: all skip the exchange.
		res, serr := z.O.StepRangesEach(z.m.Dev, z.m.Params.Arena, z.m.Grads.Arena, nil, norm, lr, nil)
		return res, errors.Join(err, serr)
	}
	m := z.m
	p16 := m.LowPrecisionParams()
	ready := make(chan int, len(z.mine))
	sent := make(chan error, 1)
	go func() { sent <- z.exchange(ctx, p16, ready) }()
	res, err := z.O.StepRangesEach(m.Dev, m.Params.Arena, m.Grads.Arena, p16, norm, lr, func(k int) {
		if k > 0 { // range 0 is the embeddings
			m.Dev.Sync()
			ready <- k - 1
		}
	})
	close(ready)
	if serr := <-sent; serr != nil {
		return res, errors.Join(err, fmt.Errorf("exchange the updated weights: %w", serr))
	}
	if err == nil && p16 == nil {
		m.ParamsChanged()
	}
	return res, err
}

// exchange all-gathers every bucket in arena order, each once ready has
// handed over this rank's piece of it (the optimizer does not report an
// empty piece).
func (z *Zero1) exchange(ctx context.Context, p16 []uint16, ready <-chan int) error {
	for j := range z.lay.Buckets {
		if pc := z.mine[j]; pc[0] < pc[1] {
			if k, ok := <-ready; !ok || k != j {
				return fmt.Errorf("zero1: piece %d of this rank's shard was not updated (got %d, %v)", j, k, ok)
			}
		}
		if err := z.gather(ctx, &z.lay.Buckets[j], p16); err != nil {
			return err
		}
	}
	return nil
}

// gather all-gathers bucket b: each rank's piece of p16 (the bf16 copy,
// two halves a float) followed by its ranges read in fp32, or with p16
// nil its fp32 piece, each rank's part padded to the same size.
func (z *Zero1) gather(ctx context.Context, b *Zero1Bucket, p16 []uint16) error {
	n, me := z.c.Size(), z.c.Rank()
	w := z.m.Params.Arena
	slot := b.Max
	if p16 != nil {
		slot = b.Slot
	}
	in, out := z.in[:slot], z.out[:n*slot]
	lo, hi := b.Lo+b.At[me], b.Lo+b.At[me+1]
	if p16 == nil {
		copy(in, w[lo:hi])
	} else {
		copy(halves(in), p16[lo:hi])
		at := b.W16
		for _, rg := range b.FP32[me] {
			at += copy(in[at:], w[rg[0]:rg[1]])
		}
	}
	if err := z.c.AllGather(ctx, out, in); err != nil {
		return err
	}
	for q := range n {
		if q == me {
			continue
		}
		part := out[q*slot : (q+1)*slot]
		lo, hi := b.Lo+b.At[q], b.Lo+b.At[q+1]
		if p16 == nil {
			copy(w[lo:hi], part)
			continue
		}
		copy(p16[lo:hi], halves(part))
		at := b.W16
		for _, rg := range b.FP32[q] {
			at += copy(w[rg[0]:rg[1]], part[at:])
		}
	}
	return nil
}

// halves views f's bytes as bf16 halves, two a float.
func halves(f []float32) []uint16 {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&f[0])), 2*len(f))
}

// SyncParams gives every rank every shard's fp32 parameters (stale
// outside its own shard after Step when the model holds a bf16 copy).
func (z *Zero1) SyncParams(ctx context.Context) error {
	z.m.Dev.Sync()
	for j := range z.lay.Buckets {
		if err := z.gather(ctx, &z.lay.Buckets[j], nil); err != nil {
			return fmt.Errorf("gather the parameters: %w", err)
		}
	}
	return nil
}
