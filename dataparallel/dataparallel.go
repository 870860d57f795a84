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
	"strconv"
	"strings"

	"hone/collective"
	"hone/engine"
	"hone/optim"
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
// runs: a goroutine allreduces each decoder layer's gradient range as soon
// as the last micro-batch's backward has finished it (the engine's
// LayerBackwardDone), in buckets, then the rest (embeddings, final norm,
// head) once the pass is over. Every rank issues the same calls in the
// same order: layers from last to first, then the rest.
type Reducer struct {
	c      collective.Collective
	m      *engine.Model
	ctx    context.Context
	grads  []float32
	layers [][2]int // per decoder layer, its arena range; nil: no overlap
	rest   [][2]int // the ranges outside the layers
	next   int      // the next layer to hand over, counting down
	work   chan [2]int
	done   chan error
}

// Start starts a reducer for one optimizer step of m (of adapter a's
// gradients when a is not nil); nil when c has one rank or is nil. Call
// Attach before the step's last micro-batch, then Finish.
func Start(ctx context.Context, c collective.Collective, m *engine.Model, a *engine.Adapter) *Reducer {
	if c == nil || c.Size() < 2 {
		return nil
	}
	g := &Reducer{c: c, m: m, ctx: ctx, grads: m.Grads.Arena, work: make(chan [2]int, 1024), done: make(chan error, 1)}
	specs := m.Config.ParamSpecs()
	if a != nil {
		g.grads, specs = a.Grads, a.Specs
	}
	g.layers, g.rest = layerRanges(specs, len(g.grads), m.Config.NumHiddenLayers)
	g.next = len(g.layers) - 1
	go func() {
		var err error
		for rg := range g.work {
			for lo := rg[0]; lo < rg[1] && err == nil; lo += Bucket {
				err = c.AllReduce(ctx, g.grads[lo:min(lo+Bucket, rg[1])])
			}
		}
		g.done <- err
	}()
	return g
}

// Attach makes the model's next backward pass hand each layer's finished
// gradients to the reducer (engine.Model.LayerBackwardDone); call it before
// the step's last micro-batch. Finish detaches it.
func (g *Reducer) Attach() {
	if g != nil {
		g.m.LayerBackwardDone = g.layerDone
	}
}

// layerDone hands layer l's gradients to the reducer (the engine hook).
func (g *Reducer) layerDone(l int) {
	if l != g.next {
		return // out of order: leave it to Finish, which keeps the order
	}
	g.m.Dev.Sync()
	g.work <- g.layers[l]
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
	g.m.LayerBackwardDone = nil
	g.m.Dev.Sync()
	for ; g.next >= 0; g.next-- {
		g.work <- g.layers[g.next]
	}
	for _, rg := range g.rest {
		g.work <- rg
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

// NewShardedAdamW returns this rank's shard of m's optimizer (ZeRO stage
// 1) and the ranks' ranges; step it with StepShard.
func NewShardedAdamW(c collective.Collective, m *engine.Model, cfg optim.AdamWConfig) (*optim.AdamW, []int, error) {
	off := Shards(len(m.Params.Arena), c.Size())
	o, err := optim.NewAdamWRange(m.Dev, m.Config.ParamSpecs(), off[c.Rank()], off[c.Rank()+1], cfg)
	return o, off, err
}

// StepShard updates this rank's range of m's parameters with its shard o
// of the optimizer (clipping by the whole gradient's norm, which every rank
// holds after the reduction), then every rank sends its range to all.
func StepShard(ctx context.Context, c collective.Collective, m *engine.Model, o *optim.AdamW, off []int, lr float64) (optim.StepResult, error) {
	me := c.Rank()
	p, g := m.Params.Arena, m.Grads.Arena
	res, err := o.StepRange(m.Dev, p[off[me]:off[me+1]], g[off[me]:off[me+1]], m.GradNorm(), lr)
	if err != nil {
		return res, err // the norm is the same on every rank: all skip
	}
	m.Dev.Sync()
	for q := range c.Size() {
		if err := Broadcast(ctx, c, p[off[q]:off[q+1]], q); err != nil {
			return res, fmt.Errorf("exchange the updated parameters: %w", err)
		}
	}
	m.ParamsChanged()
	return res, nil
}
