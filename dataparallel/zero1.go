package dataparallel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"hone/collective"
	"hone/engine"
	"hone/optim"
)

// Zero1 shards the optimizer state of a full fine-tune (ZeRO stage 1)
// so that it also moves fewer bytes than an allreduce of the gradients.
// The arena after the embeddings is split into one contiguous shard per
// rank. Each rank receives only its shard's summed gradients, updates
// its shard (AdamW, clipping by the whole gradient's norm) and sends the
// result to the others: the bf16 copy that the matrix products read, and
// the fp32 values only of the tensors that the passes read in fp32 (norms,
// biases; all of them without a bf16 copy). An untied embedding matrix,
// whose gradient is sparse (Reducer reduces it by rows), is not sharded:
// every rank updates it, so no rank sends it.
//
// With a bf16 copy, the fp32 matrices outside a rank's shard are therefore
// stale after a step: call SyncParams before reading them (a checkpoint,
// the final model). Two ranks receive their half of the gradient from the
// other with one broadcast per bucket; more ranks allreduce it.
type Zero1 struct {
	c collective.Collective
	m *engine.Model
	// front is [0, front): the embeddings every rank updates (0 when
	// they are tied or the layout is not known).
	front int
	off   []int    // rank q's shard is [off[q], off[q+1])
	fp32  [][2]int // ranges the passes read in fp32, each within one shard
	// pieces are each rank's shard in buckets: the optimizer updates
	// this rank's one at a time and the exchange sends each as it is done.
	pieces [][][2]int
	O      *optim.AdamW
}

// NewZero1 shards the optimizer state of m (full fine-tuning with AdamW)
// over c's ranks.
func NewZero1(c collective.Collective, m *engine.Model, cfg optim.AdamWConfig) (*Zero1, error) {
	return newZero1(c, m, cfg, Bucket)
}

// newZero1 is NewZero1 with shards sent in buckets of bucket weights.
func newZero1(c collective.Collective, m *engine.Model, cfg optim.AdamWConfig, bucket int) (*Zero1, error) {
	if m.Opt.LoRA != nil || m.Opt.FrozenBF16 || m.Opt.ShardRanks > 1 {
		return nil, errors.New("zero1: full fine-tuning of an unsharded model only")
	}
	specs := m.Config.ParamSpecs()
	n := len(m.Params.Arena)
	z := &Zero1{c: c, m: m}
	layers, rest := layerRanges(specs, n, m.Config.NumHiddenLayers)
	emb := embedRange(m)
	if len(layers) > 0 && !m.Config.TieWordEmbeddings && len(rest) > 0 && rest[0] == emb && emb[0] == 0 {
		z.front = emb[1]
	}
	// Shard boundaries even, so a shard's bf16 halves pack into floats.
	z.off = Shards(n-z.front, c.Size())
	for q := range z.off {
		z.off[q] = min(n, z.front+(z.off[q]+1)&^1)
	}
	z.off[0], z.off[c.Size()] = z.front, n
	p16 := m.LowPrecisionParams()
	for _, s := range specs {
		lo, hi := s.Offset, s.Offset+s.Size()
		if hi <= z.front || (p16 != nil && len(s.Shape) == 2 && lo != emb[0]) {
			continue // updated everywhere, or read through the bf16 copy
		}
		for q := range c.Size() {
			if a, b := max(lo, z.off[q]), min(hi, z.off[q+1]); a < b {
				z.fp32 = appendRange(z.fp32, [2]int{a, b}, z.off)
			}
		}
	}
	z.pieces = make([][][2]int, c.Size())
	for q := range z.pieces {
		for lo := z.off[q]; lo < z.off[q+1]; lo += bucket {
			z.pieces[q] = append(z.pieces[q], [2]int{lo, min(lo+bucket, z.off[q+1])})
		}
	}
	var err error
	z.O, err = optim.NewAdamWRanges(m.Dev, specs, append([][2]int{{0, z.front}}, z.pieces[c.Rank()]...), cfg)
	return z, err
}

// appendRange appends rg to rs, merged with the last range when they touch
// within one shard.
func appendRange(rs [][2]int, rg [2]int, off []int) [][2]int {
	if k := len(rs); k > 0 && rs[k-1][1] == rg[0] && ownerOf(off, rg[0]) == ownerOf(off, rs[k-1][0]) {
		rs[k-1][1] = rg[1]
		return rs
	}
	return append(rs, rg)
}

// ownerOf is the rank whose shard holds arena index i.
func ownerOf(off []int, i int) int {
	q := 0
	for q+1 < len(off)-1 && off[q+1] <= i {
		q++
	}
	return q
}

// Offsets are the shards' bounds: rank q's shard is [off[q], off[q+1]),
// and [0, off[0]) are the embeddings every rank updates. This rank's
// moments (O.M, O.V) hold [0, off[0]) and then its shard.
func (z *Zero1) Offsets() []int { return z.off }

// Shard is this rank's shard, [lo, hi) of the arena.
func (z *Zero1) Shard() (lo, hi int) { return z.off[z.c.Rank()], z.off[z.c.Rank()+1] }

// Start starts the reduction of one step's gradients (see Reducer): the
// embeddings' to every rank, the rest to the rank whose shard holds it.
func (z *Zero1) Start(ctx context.Context) *Reducer {
	g := Start(ctx, z.c, z.m, nil)
	if g != nil {
		g.owners = z.off
	}
	return g
}

// reduceOwned sums buf (the arena range [lo, lo+len(buf))) across ranks
// into the ranks whose shards hold it; elsewhere buf is left as it was.
func (g *Reducer) reduceOwned(lo int, buf []float32, scratch []float32) ([]float32, error) {
	if g.c.Size() != 2 || lo < g.owners[0] {
		return scratch, allReduce(g.ctx, g.c, buf)
	}
	me := g.c.Rank()
	for a := 0; a < len(buf); {
		q := ownerOf(g.owners, lo+a)
		b := min(len(buf), g.owners[q+1]-lo, a+Bucket)
		piece := buf[a:b]
		if q != me {
			if err := g.c.Broadcast(g.ctx, piece, me); err != nil {
				return scratch, err
			}
		} else {
			if cap(scratch) < len(piece) {
				scratch = make([]float32, Bucket)
			}
			other := scratch[:len(piece)]
			if err := g.c.Broadcast(g.ctx, other, 1-me); err != nil {
				return scratch, err
			}
			// Either order gives the allreduce's sum: a two-term fp32 sum
			// is the same whichever operand comes first.
			addTo(piece, other)
		}
		a = b
	}
	return scratch, nil
}

// addTo adds x into y: y[i] = y[i] + x[i] (eight at a time, without
// bounds checks in the loop).
func addTo(y, x []float32) {
	x = x[:len(y)]
	i := 0
	for ; i+8 <= len(y); i += 8 {
		a, b := (*[8]float32)(y[i:]), (*[8]float32)(x[i:])
		a[0], a[1], a[2], a[3] = a[0]+b[0], a[1]+b[1], a[2]+b[2], a[3]+b[3]
		a[4], a[5], a[6], a[7] = a[4]+b[4], a[5]+b[5], a[6]+b[6], a[7]+b[7]
	}
	for ; i < len(y); i++ {
		y[i] += x[i]
	}
}

// GradNorm is the whole gradient's L2 norm after the reduction: every
// shard's sum of squares, rank 0's with the embeddings' term (which every
// rank holds) added first, gathered and added in float64 in rank order on
// every rank.
func (z *Zero1) GradNorm(ctx context.Context) (float64, error) {
	g := z.m.Grads.Arena
	lo, hi := z.Shard()
	sq := z.m.Dev.SumSquares(g[lo:hi])
	if z.c.Rank() == 0 && z.front > 0 {
		sq = z.m.Dev.SumSquares(g[:z.front]) + sq
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
// whole gradient's norm, and sends every shard to every rank (the bf16
// copy and the fp32 tensors read in fp32; see Zero1): a goroutine sends
// each bucket of this rank's shard as soon as the optimizer has updated
// it, and receives the other ranks' meanwhile.
func (z *Zero1) Step(ctx context.Context, lr float64) (optim.StepResult, error) {
	norm, err := z.GradNorm(ctx)
	if err != nil || math.IsNaN(norm) || math.IsInf(norm, 0) {
		// The norm is the same on every rank: all skip the exchange.
		res, serr := z.O.StepRanges(z.m.Dev, z.m.Params.Arena, z.m.Grads.Arena, nil, norm, lr)
		return res, errors.Join(err, serr)
	}
	m := z.m
	p16 := m.LowPrecisionParams()
	ready := make(chan int, len(z.pieces[z.c.Rank()]))
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

// exchange sends every rank's updated shard to every rank, bucket by
// bucket in rank order; this rank's buckets as ready hands them over.
func (z *Zero1) exchange(ctx context.Context, p16 []uint16, ready <-chan int) error {
	me := z.c.Rank()
	for q, pieces := range z.pieces {
		for j, pc := range pieces {
			if q == me {
				if k, ok := <-ready; !ok || k != j {
					return fmt.Errorf("zero1: bucket %d of this rank's shard was not updated (got %d, %v)", j, k, ok)
				}
			}
			var err error
			if p16 != nil {
				err = z.broadcast16(ctx, p16[pc[0]:pc[1]], q)
			} else {
				err = Broadcast(ctx, z.c, z.m.Params.Arena[pc[0]:pc[1]], q)
			}
			if err != nil {
				return err
			}
		}
	}
	if p16 == nil {
		return nil
	}
	for _, rg := range z.fp32 {
		if err := Broadcast(ctx, z.c, z.m.Params.Arena[rg[0]:rg[1]], ownerOf(z.off, rg[0])); err != nil {
			return err
		}
	}
	return nil
}

// broadcast16 sends buf (bf16) from root to every rank, packed two halves
// a float, in buckets.
func (z *Zero1) broadcast16(ctx context.Context, buf []uint16, root int) error {
	if len(buf) >= 2 {
		f := unsafe.Slice((*float32)(unsafe.Pointer(&buf[0])), len(buf)/2)
		if err := Broadcast(ctx, z.c, f, root); err != nil {
			return err
		}
	}
	if len(buf)%2 != 0 { // the last shard may end on an odd index
		last := []float32{math.Float32frombits(uint32(buf[len(buf)-1]))}
		if err := z.c.Broadcast(ctx, last, root); err != nil {
			return err
		}
		buf[len(buf)-1] = uint16(math.Float32bits(last[0]))
	}
	return nil
}

// SyncParams gives every rank every shard's fp32 parameters (stale
// outside its own shard after Step when the model holds a bf16 copy).
func (z *Zero1) SyncParams(ctx context.Context) error {
	z.m.Dev.Sync()
	for q := range z.c.Size() {
		if err := Broadcast(ctx, z.c, z.m.Params.Arena[z.off[q]:z.off[q+1]], q); err != nil {
			return fmt.Errorf("gather the parameters: %w", err)
		}
	}
	return nil
}
