package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"hone/collective"
	"hone/engine"
)

// Data parallelism. A run of N ranks takes exactly the steps a one-process
// run of the same spec takes: the global batch of a step (BatchRows ×
// GradAccum rows, in the run's data order) is the same, and its
// micro-batches are dealt round-robin to the ranks (micro-batch i to rank
// i mod N). Each rank scales its losses by the whole step's scored-token
// count (summed across ranks first), so after the gradients are summed
// across ranks they are the gradients of the per-token mean over the
// global batch; every rank then takes the same optimizer step, and the
// weights stay identical on every rank (Gloo's allreduce hands every rank
// the same bits). Only the leader (rank 0) resumes from, and writes,
// checkpoints, evaluates, completes eval prompts and writes the final
// model; it broadcasts the resumed state to the others at the start.
//
// The device's buffers must be host-addressable (the CPU device):
// gradients and weights go to the collective in place.

// RunDistributed is Run as one rank of the data-parallel group coll. Every
// rank runs it with the same spec; each needs its own workDir (data are
// prepared in each), and only rank 0's holds checkpoints and the final
// model. Ranks other than 0 return a Result without ModelDir.
func RunDistributed(ctx context.Context, spec Spec, workDir string, obs Observer, coll collective.Collective) (*Result, error) {
	if coll == nil {
		return nil, errors.New("train: RunDistributed needs a collective group")
	}
	return run(ctx, spec, workDir, obs, coll)
}

// checkpointWait bounds how long the other ranks wait for the leader to
// evaluate and write a checkpoint.
const checkpointWait = 30 * time.Minute

// gradBucket is the number of floats reduced per call: big enough to
// amortize a call, small enough that a reduce is not one huge transfer.
const gradBucket = 4 << 20

func (r *runner) leader() bool { return r.coll == nil || r.coll.Rank() == 0 }

// mine says whether micro-batch i of a step is this rank's.
func (r *runner) mine(i int) bool { return r.coll == nil || i%r.coll.Size() == r.coll.Rank() }

func (r *runner) distributed() bool { return r.coll != nil && r.coll.Size() > 1 }

// sumCounts sums the step's scored-token and input-token counts across
// ranks. fp32 sums are exact below 2^24, so each count travels as three
// 12-bit limbs (exact for up to 4096 ranks and 2^36 tokens a rank).
func (r *runner) sumCounts(ctx context.Context, scored int, tokens int64) (int, int64, error) {
	if !r.distributed() {
		return scored, tokens, nil
	}
	var buf [6]float32
	for i, v := range []int64{int64(scored), tokens} {
		for l := range 3 {
			buf[3*i+l] = float32((v >> (12 * l)) & 0xfff)
		}
	}
	if err := r.coll.AllReduce(ctx, buf[:]); err != nil {
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

// gradReducer sums the gradients across ranks while the backward pass
// runs: a goroutine allreduces each decoder layer's gradient range as soon
// as the last micro-batch's backward has finished it (the engine's
// LayerBackwardDone), in buckets, then the rest (embeddings, final norm,
// head) once the pass is over. Every rank issues the same calls in the
// same order: layers from last to first, then the rest.
type gradReducer struct {
	r      *runner
	ctx    context.Context
	grads  []float32
	layers [][2]int // per decoder layer, its arena range; nil: no overlap
	rest   [][2]int // the ranges outside the layers
	next   int      // the next layer to hand over, counting down
	work   chan [2]int
	done   chan error
}

// newReducer starts a reducer for the step; nil when the run is not
// distributed.
func (r *runner) newReducer(ctx context.Context) *gradReducer {
	if !r.distributed() {
		return nil
	}
	g := &gradReducer{r: r, ctx: ctx, grads: r.m.Grads.Arena, work: make(chan [2]int, 1024), done: make(chan error, 1)}
	specs := r.m.Config.ParamSpecs()
	if r.a != nil {
		g.grads, specs = r.a.Grads, r.a.Specs
	}
	g.layers, g.rest = layerRanges(specs, len(g.grads), r.m.Config.NumHiddenLayers)
	g.next = len(g.layers) - 1
	go func() {
		var err error
		for rg := range g.work {
			for lo := rg[0]; lo < rg[1] && err == nil; lo += gradBucket {
				err = r.coll.AllReduce(ctx, g.grads[lo:min(lo+gradBucket, rg[1])])
			}
		}
		g.done <- err
	}()
	return g
}

// layerDone hands layer l's gradients to the reducer (the engine hook).
func (g *gradReducer) layerDone(l int) {
	if l != g.next {
		return // out of order: leave it to finish, which keeps the order
	}
	g.r.m.Dev.Sync()
	g.work <- g.layers[l]
	g.next--
}

// finish hands over what is left, waits for the reduction, and sums the
// local loss sum across ranks (as an fp32 pair, high and low parts, to
// keep most of its float64 precision).
func (g *gradReducer) finish(lossSum float64) (float64, error) {
	g.r.m.Dev.Sync()
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
	if err := g.r.coll.AllReduce(g.ctx, pair); err != nil {
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

// syncFromLeader gives every rank the leader's state: the checkpoint
// state and, when the leader resumed, its weights and optimizer moments.
func (r *runner) syncFromLeader(ctx context.Context, st *ckptState) error {
	if !r.distributed() {
		return nil
	}
	type header struct {
		State     ckptState `json:"state"`
		OptSteps  int       `json:"opt_steps"`
		Size      int       `json:"size"`
		Arena, Mo int
	}
	params := r.m.Params.Arena
	if r.a != nil {
		params = r.a.Params
	}
	h := header{State: *st, OptSteps: r.o.Steps, Size: r.coll.Size(), Arena: len(params), Mo: len(r.o.M)}
	var b []byte
	if r.leader() {
		b, _ = json.Marshal(h)
	}
	b, err := broadcastBytes(ctx, r.coll, b)
	if err != nil {
		return fmt.Errorf("receive the run's state from rank 0: %w", err)
	}
	var got header
	if err := json.Unmarshal(b, &got); err != nil {
		return fmt.Errorf("rank 0's state: %w", err)
	}
	if got.Arena != len(params) || got.Mo != len(r.o.M) {
		return fmt.Errorf("rank 0 trains %d parameters (%d moments), this rank %d (%d): ranks must run the same spec and model", got.Arena, got.Mo, len(params), len(r.o.M))
	}
	if got.State.Step == 0 {
		return nil // every rank loaded the same initial weights
	}
	r.m.Dev.Sync()
	for _, buf := range [][]float32{params, r.o.M, r.o.V} {
		for lo := 0; lo < len(buf); lo += gradBucket {
			if err := r.coll.Broadcast(ctx, buf[lo:min(lo+gradBucket, len(buf))], 0); err != nil {
				return fmt.Errorf("receive the resumed weights from rank 0: %w", err)
			}
		}
	}
	if r.a == nil {
		r.m.ParamsChanged()
	}
	*st, r.o.Steps = got.State, got.OptSteps
	return nil
}

// broadcastBytes sends b from rank 0 to every rank (one byte a float).
func broadcastBytes(ctx context.Context, c collective.Collective, b []byte) ([]byte, error) {
	n := []float32{float32(len(b))}
	if err := c.Broadcast(ctx, n, 0); err != nil {
		return nil, err
	}
	buf := make([]float32, int(n[0]))
	for i, x := range b {
		buf[i] = float32(x)
	}
	if err := c.Broadcast(ctx, buf, 0); err != nil {
		return nil, err
	}
	out := make([]byte, len(buf))
	for i, x := range buf {
		out[i] = byte(x)
	}
	return out, nil
}

// checkpointAll checkpoints on the leader while the other ranks wait (up
// to checkpointWait) to hear whether it succeeded.
func (r *runner) checkpointAll(ctx context.Context, st *ckptState) error {
	var err error
	if r.leader() {
		err = r.checkpoint(ctx, st)
	}
	if !r.distributed() {
		return err
	}
	status := []float32{0}
	if err != nil {
		status[0] = 1
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkpointWait)
	defer cancel()
	if berr := r.coll.Broadcast(wctx, status, 0); berr != nil {
		return errors.Join(err, fmt.Errorf("wait for rank 0's checkpoint: %w", berr))
	}
	if err == nil && status[0] != 0 {
		return errors.New("rank 0 failed to write the checkpoint")
	}
	return err
}
