package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"hone/collective"
	"hone/dataparallel"
	"hone/engine"
	"hone/optim"
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

// DistOptions are the options of a data-parallel run that do not change
// its results.
type DistOptions struct {
	// ShardOptimizer keeps on each rank the optimizer state (AdamW's
	// moments or LionW's moment) of its own range of the parameters only
	// (ZeRO stage 1: AdamW's 8 bytes a parameter become 8/N, LionW's 4
	// become 4/N): each rank updates its range, then sends it to the
	// others.
	// Checkpoints still hold the whole state (gathered on rank 0), so a
	// run resumes with any number of ranks, sharded or not. Full
	// fine-tuning only; a LoRA run ignores it (its state is small).
	ShardOptimizer bool
	// ShardParameters shards the fp32 parameters, the gradients and the
	// optimizer state (ZeRO stage 3): each rank holds 1/N of them and the
	// model all-gathers one part (embeddings, a decoder layer, the head)
	// before its forward and its backward and reduce-scatters its
	// gradient after (see zero3.go for the checkpoint layout). Llama,
	// Mistral and Mixtral models, full fine-tuning (AdamW or LionW) or
	// LoRA on the sharded base, fp32 or bf16 or NF4 (QLoRA: each rank
	// holds 1/N of the NF4 layers); it implies ShardOptimizer's saving.
	ShardParameters bool
}

// CheckDistOptions reports options that a run of the resolved spec cannot
// use, before any work: sharded parameters need a model whose parts hone
// can gather one at a time.
func CheckDistOptions(spec Spec, opt DistOptions) error {
	if !opt.ShardParameters {
		return nil
	}
	cfg, err := engine.LoadConfig(spec.ModelDir)
	if err != nil {
		return err
	}
	if err := cfg.CheckShardable(); err != nil {
		return fmt.Errorf("%s: %w", spec.ModelDir, err)
	}
	return nil
}

// RunDistributed is Run as one rank of the data-parallel group coll. Every
// rank runs it with the same spec and options; each needs its own workDir
// (data are prepared in each), and only rank 0's holds checkpoints and the
// final model. Ranks other than 0 return a Result without ModelDir.
func RunDistributed(ctx context.Context, spec Spec, workDir string, obs Observer, coll collective.Collective, opt DistOptions) (*Result, error) {
	if coll == nil {
		return nil, errors.New("train: RunDistributed needs a collective group")
	}
	return run(ctx, spec, workDir, obs, coll, opt)
}

// checkpointWait bounds how long the other ranks wait for the leader to
// evaluate and write a checkpoint.
const checkpointWait = 30 * time.Minute

func (r *runner) leader() bool { return r.coll == nil || r.coll.Rank() == 0 }

// mine says whether micro-batch i of a step is this rank's.
func (r *runner) mine(i int) bool { return r.coll == nil || i%r.coll.Size() == r.coll.Rank() }

func (r *runner) distributed() bool { return r.coll != nil && r.coll.Size() > 1 }

// ErrPeerStopped is returned by the ranks of a data-parallel run whose
// own context was not cancelled when another rank's was: all of them stop
// before the same step (the leader saving a stop checkpoint).
var ErrPeerStopped = fmt.Errorf("another rank of the run was stopped: %w", context.Canceled)

// stopped returns ctx's error, or with a data-parallel group whether any
// rank's context is done, so every rank stops before the same step.
func (r *runner) stopped(ctx context.Context) error {
	err := ctx.Err()
	if !r.distributed() {
		return err
	}
	flag := []float32{0}
	if err != nil {
		flag[0] = 1
	}
	if aerr := r.coll.AllReduce(ctx, flag); aerr != nil {
		return errors.Join(err, fmt.Errorf("agree on stopping with the other ranks: %w", aerr))
	}
	if err == nil && flag[0] > 0 {
		return ErrPeerStopped
	}
	return err
}

// syncFromLeader gives every rank the leader's state: the checkpoint
// state and, when the leader resumed, its weights and optimizer moments.
func (r *runner) syncFromLeader(ctx context.Context, st *ckptState) error {
	if !r.distributed() {
		return nil
	}
	if r.sh != nil && r.a == nil {
		return r.syncSharded(ctx, st)
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
	moments, optSteps := len(r.o.State()[0].Buf), r.o.StepCount()
	if r.zero1 != nil {
		moments = len(r.m.Params.Arena)
	}
	if r.resumed != nil {
		optSteps = r.resumed.StepCount()
	}
	h := header{State: *st, OptSteps: optSteps, Size: r.coll.Size(), Arena: len(params), Mo: moments}
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
	if got.Arena != len(params) || got.Mo != moments {
		return fmt.Errorf("rank 0 trains %d parameters (%d moments), this rank %d (%d): ranks must run the same spec, model and options", got.Arena, got.Mo, len(params), moments)
	}
	if got.State.Step == 0 {
		return nil // every rank loaded the same initial weights
	}
	r.m.Dev.Sync()
	bufs := [][]float32{params}
	if r.zero1 == nil {
		for _, s := range r.o.State() {
			bufs = append(bufs, s.Buf)
		}
	}
	for _, buf := range bufs {
		if err := broadcastFrom(ctx, r.coll, buf, 0); err != nil {
			return fmt.Errorf("receive the resumed weights from rank 0: %w", err)
		}
	}
	if r.zero1 != nil {
		if err := r.scatterMoments(ctx); err != nil {
			return err
		}
	}
	if r.a == nil {
		r.m.ParamsChanged()
	}
	*st = got.State
	r.o.SetStepCount(got.OptSteps)
	return nil
}

func broadcastFrom(ctx context.Context, c collective.Collective, buf []float32, root int) error {
	return dataparallel.Broadcast(ctx, c, buf, root)
}

// scatterMoments deals the leader's resumed moments out: the embeddings'
// (which every rank updates) to every rank, each shard's to its rank.
// Collectives reach every rank, so ranks whose shard is not the one in
// flight receive it into scratch.
func (r *runner) scatterMoments(ctx context.Context) error {
	me := r.coll.Rank()
	front := r.zero1.Front()
	scratch := make([]float32, r.largestShard())
	for k, st := range r.o.State() {
		mine, all := st.Buf, []float32(nil)
		if r.leader() {
			all = r.resumed.State()[k].Buf
			copy(mine, all[:front])
			packPieces(mine[front:], all, r.zero1.Pieces(0))
		}
		if err := broadcastFrom(ctx, r.coll, mine[:front], 0); err != nil {
			return fmt.Errorf("receive the embeddings' optimizer state from rank 0: %w", err)
		}
		if err := r.exchangeShards(ctx, mine, all, scratch, me, true); err != nil {
			return fmt.Errorf("receive this rank's optimizer state from rank 0: %w", err)
		}
	}
	r.resumed = nil
	return nil
}

// gatherMoments collects every rank's moments into r.gathered on the
// leader, for a checkpoint of a sharded run.
func (r *runner) gatherMoments(ctx context.Context) error {
	me := r.coll.Rank()
	front := r.zero1.Front()
	if r.leader() {
		var err error
		if r.gathered, err = r.wholeState(); err != nil {
			return err
		}
		r.gathered.SetStepCount(r.o.StepCount())
	}
	scratch := make([]float32, r.largestShard())
	for k, st := range r.o.State() {
		mine, all := st.Buf, []float32(nil)
		if r.leader() {
			all = r.gathered.State()[k].Buf
			copy(all, mine[:front])
			unpackPieces(all, mine[front:], r.zero1.Pieces(0))
		}
		if err := r.exchangeShards(ctx, mine, all, scratch, me, false); err != nil {
			r.gathered = nil
			return fmt.Errorf("gather the optimizer state for a checkpoint: %w", err)
		}
	}
	return nil
}

// exchangeShards moves the shards of ranks 1..N-1 between the leader's
// whole buffer all (arena order) and each rank's own mine (the
// embeddings' part, then its shard's pieces one after another): from the
// leader (toRanks) or to it.
func (r *runner) exchangeShards(ctx context.Context, mine, all, scratch []float32, me int, toRanks bool) error {
	front := r.zero1.Front()
	for q := 1; q < r.coll.Size(); q++ {
		pieces := r.zero1.Pieces(q)
		buf := scratch[:shardSize(pieces)]
		switch {
		case me == q:
			buf = mine[front : front+len(buf)]
		case r.leader() && toRanks:
			packPieces(buf, all, pieces)
		}
		root := q
		if toRanks {
			root = 0
		}
		if err := broadcastFrom(ctx, r.coll, buf, root); err != nil {
			return err
		}
		if r.leader() && !toRanks {
			unpackPieces(all, buf, pieces)
		}
	}
	return nil
}

// packPieces copies the pieces of the arena-ordered all into dst, one
// after another; unpackPieces copies them back.
func packPieces(dst, all []float32, pieces [][2]int) {
	at := 0
	for _, pc := range pieces {
		at += copy(dst[at:], all[pc[0]:pc[1]])
	}
}

func unpackPieces(all, src []float32, pieces [][2]int) {
	at := 0
	for _, pc := range pieces {
		at += copy(all[pc[0]:pc[1]], src[at:])
	}
}

// shardSize is the floats of a shard's pieces.
func shardSize(pieces [][2]int) int {
	n := 0
	for _, pc := range pieces {
		n += pc[1] - pc[0]
	}
	return n
}

// largestShard is the size of the largest rank's shard.
func (r *runner) largestShard() int {
	n := 0
	for q := range r.coll.Size() {
		n = max(n, shardSize(r.zero1.Pieces(q)))
	}
	return n
}

// saveAll writes a checkpoint of st: the leader writes it, after gathering
// the optimizer state when it is sharded (every rank takes part).
func (r *runner) saveAll(ctx context.Context, st *ckptState) error {
	if r.sh != nil && r.a == nil {
		return r.saveSharded(ctx, st)
	}
	if r.zero1 != nil {
		if err := r.syncZero1(ctx); err != nil {
			return err
		}
		defer func() { r.gathered = nil }()
	}
	if !r.leader() {
		return nil
	}
	return r.save(st)
}

// syncZero1 prepares a checkpoint of a run with a sharded optimizer:
// every rank's fp32 weights made whole (Zero1 sends only the bf16 copy
// of most of them each step) and the moments gathered on the leader.
func (r *runner) syncZero1(ctx context.Context) error {
	if err := r.zero1.SyncParams(ctx); err != nil {
		return err
	}
	return r.gatherMoments(ctx)
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
	if r.zero1 != nil {
		if err := r.syncZero1(ctx); err != nil {
			return err
		}
		defer func() { r.gathered = nil }()
	}
	switch {
	case r.sh != nil:
		err = r.checkpointSharded(ctx, st)
	case r.leader():
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

// wholeState is the run's optimizer with the state of the whole arena:
// the leader's while a run with a sharded optimizer resumes or saves.
func (r *runner) wholeState() (optim.RangeOptimizer, error) {
	return r.spec.NewRanges()(r.m.Dev, r.m.Config.ParamSpecs(), [][2]int{{0, len(r.m.Params.Arena)}})
}
