// Package dataparallel holds the per-step mechanics of data-parallel
// training shared by train and bench: summing a step's token counts across
// ranks, and summing the gradients while the backward pass runs.
//
// The device's buffers must be host-addressable (the CPU device): the
// gradients go to the collective in place.
package dataparallel

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unsafe"

	"hone/collective"
	"hone/engine"
)

// Bucket is the number of floats reduced per collective call: big enough
// to amortize a call, small enough that the first bucket of a layer need
// not wait for a huge transfer.
const Bucket = 4 << 20

// SumCounts sums the step's scored-token and input-token counts across
// ranks. fp32 sums are exact below 2^24, so each count travels as three
// 12-bit limbs (exact for up to 4096 ranks and 2^36 tokens a rank).
func SumCounts(ctx context.Context, c collective.Collective, scored int, tokens int64) (int, int64, error) {
	if c == nil || c.Size() < 2 {
		return scored, tokens, nil
	}
	var buf [6]float32
	for i, v := range []int64{int64(scored), tokens} {
		for l := range 3 {
			buf[3*i+l] = float32((v >> (12 * l)) & 0xfff)
		}
	}
	if err := c.AllReduce(ctx, buf[:]); err != nil {
		return 0, 0, fmt.Errorf("sum token counts across ranks: %w", err)
	}
	var out [2]int64
	for i := range out {
		for l := range 3 {
			out[i] += int64(buf[3*i+l]) << (12 * l)
		}
	}
	return int(out[0]), out[1], nil
}

// Reducer sums the gradients across ranks while the backward pass
// runs: a goroutine allreduces, in buckets, the gradients after the
// decoder layers (final norm, output head) as soon as the last
// micro-batch's backward has finished them (the engine's
// HeadBackwardDone), then each decoder layer's as the backward pass
// finishes it (LayerBackwardDone), then the rest (the embeddings) once the
// pass is over. Every rank issues the same calls in the same order: the
// head, layers from last to first, then the rest.
//
// The embeddings' gradient of a full fine-tune with untied embeddings is
// sparse (only the rows of tokens in the batch are not zero), so it is
// reduced as rows: the ranks first agree on the rows that are not zero on
// some rank, then sum only those. A row left out is zero on every rank,
// its sum too: the result is the dense allreduce's.
type Reducer struct {
	c      collective.Collective
	m      *engine.Model
	ctx    context.Context
	grads  []float32
	layers [][2]int // per decoder layer, its arena range; nil: no overlap
	head   [][2]int // the ranges after the layers, reduced once the head's backward is done
	rest   [][2]int // the ranges before the layers (all of the arena when layers is nil)
	rows   int      // > 0: rest is one embedding matrix of rows × cols, reduced by rows
	cols   int
	zero   *Zero1 // set by Zero1.Start: reduce-scatter each bucket to its pieces' ranks
	sent   bool   // head handed over
	next   int    // the next layer to hand over, counting down
	work   chan reduceWork
	done   chan error
}

// reduceWork is one range for the reducer's goroutine; rows > 0 reduces
// it as a matrix of rows × cols by its rows that are not zero.
type reduceWork struct {
	rg         [2]int
	rows, cols int
}

// Start starts a reducer for one optimizer step of m (of adapter a's
// gradients when a is not nil); nil when c has one rank or is nil. Call
// Attach before the step's last micro-batch, then Finish.
func Start(ctx context.Context, c collective.Collective, m *engine.Model, a *engine.Adapter) *Reducer {
	if c == nil || c.Size() < 2 {
		return nil
	}
	g := &Reducer{c: c, m: m, ctx: ctx, grads: m.Grads.Arena, work: make(chan reduceWork, 1024), done: make(chan error, 1)}
	specs := m.Config.ParamSpecs()
	if a != nil {
		g.grads, specs = a.Grads, a.Specs
	}
	var rest [][2]int
	g.layers, rest = layerRanges(specs, len(g.grads), m.Config.NumHiddenLayers)
	g.next = len(g.layers) - 1
	for _, rg := range rest {
		if len(g.layers) > 0 && rg[0] >= g.layers[len(g.layers)-1][1] {
			g.head = append(g.head, rg)
		} else {
			g.rest = append(g.rest, rg)
		}
	}
	if a == nil && !m.Config.TieWordEmbeddings && len(g.rest) == 1 {
		if g.rest[0] == embedRange(m) {
			g.rows, g.cols = m.Config.VocabSize, m.Config.HiddenSize
		}
	}
	go g.run()
	return g
}

// embedRange is the embedding matrix's range of m's arena.
func embedRange(m *engine.Model) [2]int {
	e := m.Params.Embed
	lo := int((uintptr(unsafe.Pointer(&e[0])) - uintptr(unsafe.Pointer(&m.Params.Arena[0]))) / 4)
	return [2]int{lo, lo + len(e)}
}

// run reduces what the reducer is handed until the channel closes; after
// an error it only drains (the group is broken).
func (g *Reducer) run() {
	var err error
	var scratch []float32
	for w := range g.work {
		switch {
		case err != nil:
		case w.rows > 0:
			scratch, err = g.reduceRows(g.grads[w.rg[0]:w.rg[1]], w.rows, w.cols, scratch)
		case g.zero != nil:
			err = g.reduceScatter(w.rg[0], w.rg[1])
		default:
			err = allReduce(g.ctx, g.c, g.grads[w.rg[0]:w.rg[1]])
		}
	}
	g.done <- err
}

// allReduce sums buf across ranks in buckets.
func allReduce(ctx context.Context, c collective.Collective, buf []float32) error {
	for lo := 0; lo < len(buf); lo += Bucket {
		if err := c.AllReduce(ctx, buf[lo:min(lo+Bucket, len(buf))]); err != nil {
			return err
		}
	}
	return nil
}

// reduceRows sums the rows × cols matrix buf across ranks, moving only
// the rows that are not zero on some rank: the ranks sum a mask of their
// nonzero rows (negative zero counts as nonzero, so every rank ends with
// the same bits), then the packed rows. scratch is reused across calls.
func (g *Reducer) reduceRows(buf []float32, rows, cols int, scratch []float32) ([]float32, error) {
	mask := make([]float32, rows)
	for r := range rows {
		if anyBits(buf[r*cols : (r+1)*cols]) {
			mask[r] = 1
		}
	}
	if err := g.c.AllReduce(g.ctx, mask); err != nil {
		return scratch, err
	}
	var used []int
	for r, x := range mask {
		if x != 0 {
			used = append(used, r)
		}
	}
	if len(used)*cols > cap(scratch) {
		scratch = make([]float32, len(used)*cols)
	}
	packed := scratch[:len(used)*cols]
	for i, r := range used {
		copy(packed[i*cols:(i+1)*cols], buf[r*cols:(r+1)*cols])
	}
	if err := allReduce(g.ctx, g.c, packed); err != nil {
		return scratch, err
	}
	for i, r := range used {
		copy(buf[r*cols:(r+1)*cols], packed[i*cols:(i+1)*cols])
	}
	return scratch, nil
}

// anyBits says whether some x has a bit set (negative zero counts), OR-ing
// eight bytes at a time: most rows of an embedding gradient are zero and
// read whole.
func anyBits(x []float32) bool {
	var acc uint64
	if n := len(x) / 2; n > 0 {
		for _, w := range unsafe.Slice((*uint64)(unsafe.Pointer(&x[0])), n) {
			acc |= w
		}
	}
	if len(x)%2 != 0 {
		acc |= uint64(math.Float32bits(x[len(x)-1]))
	}
	return acc != 0
}

// Attach makes the model's next backward pass hand the head's and each
// layer's finished gradients to the reducer (engine.Model's
// HeadBackwardDone and LayerBackwardDone); call it before the step's last
// micro-batch. Finish detaches it.
func (g *Reducer) Attach() {
	if g != nil {
		g.m.LayerBackwardDone = g.layerDone
		g.m.HeadBackwardDone = g.headDone
	}
}

// headDone hands the ranges after the layers to the reducer (the engine
// hook).
func (g *Reducer) headDone() {
	if g.sent {
		return
	}
	g.m.Dev.Sync()
	for _, rg := range g.head {
		g.work <- reduceWork{rg: rg}
	}
	g.sent = true
}

// layerDone hands layer l's gradients to the reducer (the engine hook).
func (g *Reducer) layerDone(l int) {
	if l != g.next || !g.sent {
		return // out of order: leave it to Finish, which keeps the order
	}
	g.m.Dev.Sync()
	g.work <- reduceWork{rg: g.layers[l]}
	g.next--
}

// Finish hands over what is left, waits for the reduction, and returns the
// local loss sum summed across ranks (sent as an fp32 pair, high and low
// parts, to keep most of its float64 precision). A nil Reducer returns
// lossSum.
func (g *Reducer) Finish(lossSum float64) (float64, error) {
	if g == nil {
		return lossSum, nil
	}
	g.m.LayerBackwardDone, g.m.HeadBackwardDone = nil, nil
	g.m.Dev.Sync()
	g.headDone()
	for ; g.next >= 0; g.next-- {
		g.work <- reduceWork{rg: g.layers[g.next]}
	}
	for _, rg := range g.rest {
		g.work <- reduceWork{rg: rg, rows: g.rows, cols: g.cols}
	}
	close(g.work)
	if err := <-g.done; err != nil {
		return 0, fmt.Errorf("reduce gradients across ranks: %w", err)
	}
	hi := float32(lossSum)
	pair := []float32{hi, float32(lossSum - float64(hi))}
	if err := g.c.AllReduce(g.ctx, pair); err != nil {
		return 0, fmt.Errorf("sum the loss across ranks: %w", err)
	}
	return float64(pair[0]) + float64(pair[1]), nil
}

// layerRanges splits an arena of n floats laid out by specs into each
// decoder layer's contiguous range and the ranges between them. When a
// layer's tensors are not contiguous it returns no layers and the whole
// arena as the rest (no overlap, same result).
func layerRanges(specs []engine.ParamSpec, n, numLayers int) (layers, rest [][2]int) {
	whole := [][2]int{{0, n}}
	layers = make([][2]int, numLayers)
	size := make([]int, numLayers)
	for l := range layers {
		layers[l] = [2]int{n, 0}
	}
	for _, s := range specs {
		l, ok := layerOf(s.Name)
		if !ok {
			continue
		}
		if l >= numLayers {
			return nil, whole
		}
		layers[l] = [2]int{min(layers[l][0], s.Offset), max(layers[l][1], s.Offset+s.Size())}
		size[l] += s.Size()
	}
	at := 0
	for l, rg := range layers {
		if size[l] == 0 || rg[1]-rg[0] != size[l] || rg[0] < at {
			return nil, whole // not contiguous, or not in order
		}
		if rg[0] > at {
			rest = append(rest, [2]int{at, rg[0]})
		}
		at = rg[1]
	}
	if at < n {
		rest = append(rest, [2]int{at, n})
	}
	return layers, rest
}

// layerOf parses the decoder layer index from an HF or PEFT tensor name
// (".layers.N." or DBRX's ".blocks.N.").
func layerOf(name string) (int, bool) {
	for _, key := range []string{"layers.", "blocks."} {
		i := strings.Index(name, key)
		if i < 0 || (i > 0 && name[i-1] != '.') {
			continue
		}
		rest := name[i+len(key):]
		j := strings.IndexByte(rest, '.')
		if j <= 0 {
			continue
		}
		if l, err := strconv.Atoi(rest[:j]); err == nil {
			return l, true
		}
	}
	return 0, false
}

// Broadcast sends buf from root to every rank, in buckets.
func Broadcast(ctx context.Context, c collective.Collective, buf []float32, root int) error {
	for lo := 0; lo < len(buf); lo += Bucket {
		if err := c.Broadcast(ctx, buf[lo:min(lo+Bucket, len(buf))], root); err != nil {
			return err
		}
	}
	return nil
}

// Shards returns the ranks' ranges of an n-float arena: rank q's is
// [off[q], off[q+1]).
func Shards(n, ranks int) []int { return collective.Offsets(collective.EvenCounts(n, ranks)) }
