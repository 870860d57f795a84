package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"

	"hone/collective"
	"hone/dataparallel"
	"hone/dataset"
	"hone/engine"
	"hone/optim"
	"hone/safetensors"
)

// Sharded parameters (ZeRO stage 3, DistOptions.ShardParameters). Each
// rank holds only its shard of the fp32 parameters, of the gradients and
// of the optimizer state (dataparallel.Sharded): the model gathers one part
// (the embeddings, a decoder layer, the head) before its forward and
// again before its backward, and reduce-scatters its gradient after.
// Every rank takes part in every pass, so evaluation runs on all ranks
// (the leader reports it) and a rank with fewer micro-batches in a step
// runs passes that score nothing. A LoRA run shards its frozen fp32 base
// the same way, a QLoRA run its NF4 layers (each rank a chunk of every
// layer's NF4 data; the unquantized tensors whole, engine/nf4shard.go);
// the adapter is whole on every rank and checkpointed as in any LoRA run.
//
// Checkpoint layout (checkpoints/step-NNNNNNNN of the leader's work dir):
//
//	shards/manifest.json                  ranks N, parameter count, and each
//	                                      rank's ranges of the full arena
//	shards/params-QQQQQ-of-NNNNN.safetensors      rank Q's fp32 parameters,
//	shards/exp_avg-QQQQQ-of-NNNNN.safetensors     optimizer state (AdamW's
//	shards/exp_avg_sq-QQQQQ-of-NNNNN.safetensors  moments, LionW's exp_avg
//	                                      only), one flat tensor each, its
//	                                      ranges in order (written atomically)
//	state.json                            as in any checkpoint
//
// The leader writes each rank's shard as it arrives (ranks need not share
// a file system). A run resumes from it with any number of ranks,
// sharded or not, and a sharded run resumes from an unsharded checkpoint:
// each rank's ranges are read from whatever layout was written.

// shardManifest is shards/manifest.json.
type shardManifest struct {
	Ranks  int        `json:"ranks"`
	Params int        `json:"params"`
	Shards [][][2]int `json:"shards"` // per rank, its ranges of the full arena, in file order
}

func shardFile(kind string, q, n int) string {
	return fmt.Sprintf("%s-%05d-of-%05d.safetensors", kind, q, n)
}

// newShardedRunner is newRunner for sharded parameters.
func newShardedRunner(spec Spec, prep *dataset.Prepared, workDir string, obs Observer, coll collective.Collective) (*runner, error) {
	if err := CheckDistOptions(spec, DistOptions{ShardParameters: true}); err != nil {
		return nil, err
	}
	spec.shardRanks = coll.Size() // plan this rank's share of the state
	cfg, dev, opts, err := planModel(spec, prep.ContextLength(), obs)
	if err != nil {
		return nil, err
	}
	m := engine.New(cfg, dev, opts)
	sh, err := dataparallel.NewSharded(coll, m)
	if err != nil {
		return nil, err
	}
	if opts.QuantizeBase != "" {
		err = engine.LoadNF4Shard(spec.weightsDir(), m)
	} else {
		err = engine.LoadRanges(spec.weightsDir(), cfg, sh.Ranges(), sh.Chunks(sh.P))
	}
	if err != nil {
		return nil, err
	}
	debug.FreeOSMemory() // the whole tensors the shards were cut from
	m.Reserve(spec.BatchRows, prep.ContextLength())
	var a *engine.Adapter
	var o optim.Optimizer
	if spec.Method == "lora" {
		a, o, err = newLoRA(spec, m)
	} else {
		o, err = sh.NewOptimizer(spec.NewRanges())
	}
	if err != nil {
		return nil, err
	}
	r := &runner{spec: spec, m: m, a: a, o: o, coll: coll, sh: sh}
	if err := r.start(prep, workDir, obs); err != nil {
		return nil, err
	}
	if opts.QuantizeBase != "" {
		obs.OnLog(fmt.Sprintf("NF4 base sharded over %d ranks: this rank holds %d bytes of its layers, gathering one layer at a time", coll.Size(), m.NF4Bytes()))
	} else {
		obs.OnLog(fmt.Sprintf("parameters sharded over %d ranks: this rank holds %d of %d parameters, gathering one layer at a time", coll.Size(), len(sh.P), cfg.NumParams()))
	}
	return r, nil
}

// stepSharded runs a step's passes on a sharded model: this rank's
// micro-batches, then passes that score nothing until it has run as many
// as the rank with the most (every pass gathers from every rank).
func (r *runner) stepSharded(ctx context.Context, batches []*engine.Batch, starts []int64, first, last int64, scored int, lr float64) (float64, optim.StepResult, error) {
	var res optim.StepResult
	rows := int64(r.spec.BatchRows)
	micro := int((last - first + rows - 1) / rows)
	passes := (micro + r.coll.Size() - 1) / r.coll.Size()
	r.sh.Begin(ctx)
	r.sh.Passes(passes)
	r.sh.ZeroGrad()
	var red *dataparallel.Reducer
	if r.a != nil {
		// The adapter's gradients are summed after the passes: the
		// gathers use the group meanwhile.
		r.a.ZeroGrad()
		red = dataparallel.Start(ctx, r.coll, r.m, r.a)
	}
	var sum float64
	for i := range passes {
		if i < len(batches) {
			s, _ := r.m.ForwardBackwardDropout(batches[i], 1/float32(scored), dropoutSeed(r.spec.Seed, starts[i]))
			sum += s
		} else {
			pad, err := engine.NewBatch([][]int{{0}}, [][]int{{-100}}, nil, r.m.Config.VocabSize)
			if err != nil {
				return 0, res, err
			}
			r.m.ForwardBackward(pad, 0)
		}
		if err := r.sh.Err(); err != nil {
			if red != nil {
				red.Finish(0) // stops its goroutine (the group is broken)
			}
			return 0, res, err
		}
	}
	var err error
	if red != nil {
		sum, err = red.Finish(sum)
	} else {
		sum, err = dataparallel.SumLoss(ctx, r.coll, sum)
	}
	if err != nil {
		return 0, res, err
	}
	loss := sum / float64(scored)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return loss, res, fmt.Errorf("loss is %v: the learning rate may be too high", loss)
	}
	if r.a != nil {
		res, err = r.o.StepAdapter(r.a, lr)
	} else {
		res, err = r.sh.Step(ctx, r.o.(optim.RangeOptimizer), lr) // sh.NewOptimizer's
	}
	return loss, res, err
}

// shardBufs are this rank's shards of a checkpoint's flat tensors: the
// parameters, then the optimizer state.
func (r *runner) shardBufs() []optim.State {
	return append([]optim.State{{Name: "params", Buf: r.sh.P}}, r.o.State()...)
}

// shardLen is the length of rank q's shard.
func shardLen(ranges [][2]int) int {
	n := 0
	for _, rg := range ranges {
		n += rg[1] - rg[0]
	}
	return n
}

// writeShards sends every rank's shards to the leader, which writes them
// under dir/shards (every rank calls it; the leader returns its first
// write error after taking part in every transfer).
func (r *runner) writeShards(ctx context.Context, dir string) error {
	cfg, n, me := r.m.Config, r.coll.Size(), r.coll.Rank()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkpointWait)
	defer cancel()
	man := shardManifest{Ranks: n, Params: int(cfg.NumParams())}
	for q := range n {
		man.Shards = append(man.Shards, cfg.ShardRanges(n, q))
	}
	var werr error
	if r.leader() {
		werr = os.MkdirAll(filepath.Join(dir, "shards"), 0o755)
	}
	scratch := make([]float32, shardLen(man.Shards[0])) // rank 0's is the largest
	for _, mine := range r.shardBufs() {
		for q := range n {
			buf := scratch[:shardLen(man.Shards[q])]
			if q == me {
				buf = mine.Buf
			}
			if q != 0 {
				if err := broadcastFrom(wctx, r.coll, buf, q); err != nil {
					return fmt.Errorf("send the shards to rank 0 for a checkpoint: %w", err)
				}
			}
			if r.leader() && werr == nil {
				rg, _ := json.Marshal(man.Shards[q])
				werr = safetensors.WriteFile(filepath.Join(dir, "shards", shardFile(mine.Name, q, n)),
					[]safetensors.Tensor{{Name: mine.Name, Shape: []int{len(buf)}, Data: buf}}, safetensors.F32,
					map[string]string{"ranges": string(rg)})
			}
		}
	}
	if r.leader() && werr == nil {
		b, _ := json.MarshalIndent(man, "", "  ")
		werr = engine.WriteFileAtomic(filepath.Join(dir, "shards", "manifest.json"), b)
	}
	if werr != nil {
		return fmt.Errorf("save checkpoint: %w", werr)
	}
	return nil
}

// saveSharded writes a checkpoint of a sharded run (every rank calls it;
// the leader writes and reports it).
func (r *runner) saveSharded(ctx context.Context, st *ckptState) error {
	var tmp, final string
	var err error
	if r.leader() {
		final, tmp = ckptDir(r.workDir, st.Step)
		err = os.RemoveAll(tmp)
	}
	if werr := r.writeShards(ctx, tmp); werr != nil {
		return errors.Join(err, werr)
	}
	if !r.leader() || err != nil {
		return err
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := engine.WriteFileAtomic(filepath.Join(tmp, "state.json"), b); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	pruned, err := commitCheckpoint(r.workDir, tmp, final, r.spec.KeepCheckpoints,
		func() error { return fence(r.obs, fmt.Sprintf("checkpoint of step %d", st.Step)) })
	if err != nil {
		return err
	}
	r.obs.OnCheckpoint(Checkpoint{Step: st.Step, Epoch: st.Epoch, Dir: final, Pruned: pruned})
	return nil
}

// checkpointSharded evaluates (every rank computes, the leader reports)
// and saves the state.
func (r *runner) checkpointSharded(ctx context.Context, st *ckptState) error {
	if r.eval != nil && r.eval.NumRows() > 0 {
		r.sh.Begin(ctx)
		em, err := r.evaluate()
		if err == nil {
			err = r.sh.Err()
		}
		if err != nil {
			return err
		}
		em.Step = st.Step
		r.lastEval = em.Loss
		if r.leader() {
			r.obs.OnEval(em)
		}
	}
	if r.a != nil { // a LoRA run saves its adapter only: the leader has it
		if !r.leader() {
			return nil
		}
		return r.save(st)
	}
	return r.saveSharded(ctx, st)
}

// syncSharded gives every rank the leader's resumed state: the checkpoint
// state, and each rank's shards read by the leader from the checkpoint
// (of any layout) and sent to it.
func (r *runner) syncSharded(ctx context.Context, st *ckptState) error {
	var b []byte
	if r.leader() {
		b, _ = json.Marshal(st)
	}
	b, err := broadcastBytes(ctx, r.coll, b)
	if err != nil {
		return fmt.Errorf("receive the run's state from rank 0: %w", err)
	}
	var got ckptState
	if err := json.Unmarshal(b, &got); err != nil {
		return fmt.Errorf("rank 0's state: %w", err)
	}
	if got.Step == 0 {
		return nil
	}
	var rd stateReader
	var rerr error
	if r.leader() {
		rd, rerr = openStateReader(r.resumeDir, r.m.Config)
		if rd != nil {
			defer rd.Close()
		}
	}
	cfg, n, me := r.m.Config, r.coll.Size(), r.coll.Rank()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkpointWait)
	defer cancel()
	scratch := make([]float32, shardLen(cfg.ShardRanges(n, 0)))
	for _, mine := range r.shardBufs() {
		for q := range n {
			ranges := cfg.ShardRanges(n, q)
			buf := scratch[:shardLen(ranges)]
			if q == me {
				buf = mine.Buf
			}
			if r.leader() && rerr == nil {
				off := 0
				for _, rg := range ranges {
					if rerr = rd.read(mine.Name, rg[0], rg[1], buf[off:off+rg[1]-rg[0]]); rerr != nil {
						break
					}
					off += rg[1] - rg[0]
				}
			}
			if q != 0 {
				if err := broadcastFrom(wctx, r.coll, buf, 0); err != nil {
					return fmt.Errorf("receive this rank's shards from rank 0: %w", err)
				}
			}
		}
	}
	// A read error on the leader still sent every rank its (partial)
	// shards; now all learn of it.
	status := []float32{0}
	if rerr != nil {
		status[0] = 1
	}
	if err := r.coll.Broadcast(wctx, status, 0); err != nil {
		return errors.Join(rerr, err)
	}
	if rerr != nil {
		return fmt.Errorf("resume from %s: %w", r.resumeDir, rerr)
	}
	if status[0] != 0 {
		return errors.New("rank 0 failed to read the checkpoint")
	}
	*st = got
	r.o.SetStepCount(got.Step)
	return nil
}

// saveFinalSharded gathers the weights on the leader, part by part, and
// writes them as an HF model directory. The gradient and optimizer state
// shards are released first: training is over.
func (r *runner) saveFinalSharded(ctx context.Context) (string, error) {
	r.o, r.sh.G = nil, nil
	runtime.GC()
	var arena []float32
	if r.leader() {
		arena = make([]float32, r.m.Config.NumParams())
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), checkpointWait)
	defer cancel()
	if err := r.sh.GatherTo(wctx, 0, arena); err != nil {
		return "", fmt.Errorf("gather the final weights: %w", err)
	}
	if !r.leader() {
		return "", nil
	}
	return r.writeFinal(func(dir string) error {
		return engine.SaveArena(r.m.Config, arena, dir, engine.SaveOptions{SourceDir: r.spec.ModelDir})
	})
}

// stateReader reads ranges of a checkpoint's full state, whatever its
// layout: "params" and the optimizer state, by full-arena offsets.
type stateReader interface {
	read(kind string, lo, hi int, dst []float32) error
	Close() error
}

// openStateReader opens the checkpoint dir: sharded (shards/manifest.json)
// or whole (model/ and optimizer.safetensors).
func openStateReader(dir string, cfg *engine.Config) (stateReader, error) {
	b, err := os.ReadFile(filepath.Join(dir, "shards", "manifest.json"))
	if os.IsNotExist(err) {
		return openWholeReader(dir, cfg)
	}
	if err != nil {
		return nil, err
	}
	var man shardManifest
	if err := json.Unmarshal(b, &man); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "shards", "manifest.json"), err)
	}
	if man.Params != int(cfg.NumParams()) || man.Ranks != len(man.Shards) {
		return nil, fmt.Errorf("%s: %d parameters in %d shards (%d listed); the model has %d parameters",
			filepath.Join(dir, "shards", "manifest.json"), man.Params, man.Ranks, len(man.Shards), cfg.NumParams())
	}
	return &shardReader{dir: filepath.Join(dir, "shards"), man: man, files: map[string]*safetensors.File{}}, nil
}

type shardReader struct {
	dir   string
	man   shardManifest
	files map[string]*safetensors.File
}

func (s *shardReader) read(kind string, lo, hi int, dst []float32) error {
	for q, ranges := range s.man.Shards {
		off := 0
		for _, rg := range ranges {
			a, b := max(lo, rg[0]), min(hi, rg[1])
			if a < b {
				name := shardFile(kind, q, s.man.Ranks)
				f, ok := s.files[name]
				if !ok {
					var err error
					if f, err = safetensors.Open(filepath.Join(s.dir, name)); err != nil {
						return err
					}
					s.files[name] = f
				}
				if err := f.Float32At(kind, dst[a-lo:b-lo], off+a-rg[0]); err != nil {
					return err
				}
			}
			off += rg[1] - rg[0]
		}
	}
	return nil
}

func (s *shardReader) Close() error {
	for _, f := range s.files {
		f.Close()
	}
	return nil
}

type wholeReader struct {
	cfg   *engine.Config
	model *safetensors.Model
	opt   *safetensors.File
}

func openWholeReader(dir string, cfg *engine.Config) (stateReader, error) {
	m, err := safetensors.OpenModel(filepath.Join(dir, "model"))
	if err != nil {
		return nil, err
	}
	o, err := safetensors.Open(filepath.Join(dir, "optimizer.safetensors"))
	if err != nil {
		m.Close()
		return nil, err
	}
	return &wholeReader{cfg: cfg, model: m, opt: o}, nil
}

func (w *wholeReader) read(kind string, lo, hi int, dst []float32) error {
	if kind != "params" {
		return w.opt.Float32At(kind, dst, lo)
	}
	for _, s := range w.cfg.ParamSpecs() {
		a, b := max(lo, s.Offset), min(hi, s.Offset+s.Size())
		if a < b {
			if err := w.model.Float32At(s.Name, dst[a-lo:b-lo], a-s.Offset); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *wholeReader) Close() error {
	w.opt.Close()
	return w.model.Close()
}
