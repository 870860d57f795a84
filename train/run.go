package train

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"hone/collective"
	"hone/dataparallel"
	"hone/dataset"
	"hone/engine"
	"hone/generate"
	"hone/optim"
	"hone/settings"
)

// ValidationReport is the data report of Validate.
type ValidationReport = dataset.Report

// Validate checks the spec and the data without training. Bad records are
// in the report (report.OK() is false) and also returned as an error that
// lists the first of them with file:line.
func Validate(ctx context.Context, spec Spec) (*ValidationReport, error) {
	return ValidateProgress(ctx, spec, nil)
}

// ValidateProgress is Validate reporting its data's progress to progress
// (when not nil) as dataset.Validate does: the training data, then the
// eval data counted on top of it (its bytes join the total when its
// validation starts).
func ValidateProgress(ctx context.Context, spec Spec, progress func(dataset.Progress)) (*ValidationReport, error) {
	spec, err := spec.withDefaults()
	if err != nil {
		return nil, err
	}
	task, err := dataset.ParseTask(spec.Task)
	if err != nil {
		return nil, err
	}
	if err := spec.checkAdapter(); err != nil {
		return nil, err
	}
	if err := checkModelFiles(spec); err != nil {
		return nil, err
	}
	cfg, err := engine.LoadConfig(spec.ModelDir)
	if err != nil {
		return nil, err
	}
	// The report speaks of the rows the run will train on.
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: spec.Threads})
	if err != nil {
		return nil, err
	}
	cc, err := chooseContext(spec, cfg, dev, "", 0)
	if err != nil {
		return nil, err
	}
	spec.ContextLength = cc.Length
	opt := spec.dataOptions()
	var trained dataset.Progress // the training data's, once done
	if progress != nil {
		opt.Progress = func(p dataset.Progress) { trained = p; progress(p) }
	}
	rep, err := dataset.Validate(ctx, spec.ModelDir, task, spec.TrainData, opt)
	if err != nil {
		return nil, err
	}
	if !rep.OK() {
		return rep, &dataset.ProblemsError{Problems: rep.Problems, Count: rep.ProblemCount}
	}
	if spec.EvalData != "" {
		eopt := spec.dataOptions()
		eopt.Split, eopt.Version = cmp.Or(spec.EvalSplit, dataset.DefaultEvalSplit), nil
		if progress != nil {
			eopt.Progress = func(p dataset.Progress) {
				progress(dataset.Progress{BytesRead: trained.BytesRead + p.BytesRead, TotalBytes: trained.TotalBytes + p.TotalBytes,
					Records: trained.Records + p.Records})
			}
		}
		erep, err := dataset.Validate(ctx, spec.ModelDir, task, spec.EvalData, eopt)
		if err != nil {
			return rep, fmt.Errorf("eval_data_path: %w", err)
		}
		if !erep.OK() {
			return rep, fmt.Errorf("eval_data_path: %w", &dataset.ProblemsError{Problems: erep.Problems, Count: erep.ProblemCount})
		}
	}
	return rep, nil
}

// checkModelFiles holds the weights a run would load (the custom weights
// when given, else the base model's) to their config.json and to the base
// model's shape, reading only the safetensors headers.
func checkModelFiles(spec Spec) error {
	cfg, err := engine.LoadConfig(spec.ModelDir)
	if err != nil {
		return err
	}
	if spec.InitWeights == "" {
		_, err := engine.CheckModelFiles(spec.ModelDir)
		return err
	}
	icfg, err := engine.CheckModelFiles(spec.InitWeights)
	if err != nil {
		return fmt.Errorf("custom_weights_path: %w", err)
	}
	if !sameShape(icfg, cfg) {
		return fmt.Errorf("custom_weights_path %s: its config (%d layers, hidden %d, vocab %d) does not match the base model's (%d layers, hidden %d, vocab %d)",
			spec.InitWeights, icfg.NumHiddenLayers, icfg.HiddenSize, icfg.VocabSize, cfg.NumHiddenLayers, cfg.HiddenSize, cfg.VocabSize)
	}
	return nil
}

func (s Spec) dataOptions() dataset.Options {
	return dataset.Options{ContextLength: s.ContextLength, BatchRows: s.BatchRows * s.GradAccum, EvalData: s.EvalData, EvalSeed: s.Seed,
		Split: s.TrainSplit, EvalSplit: s.EvalSplit, Version: s.TrainVersion}
}

// fingerprint identifies the settings that determine the weights, so a work
// directory is never resumed under different settings.
func (s Spec) fingerprint() string {
	if s.Method == "full" {
		s.Method = "" // as before methods existed, so older checkpoints resume
	}
	if s.Optimizer == "adamw" {
		s.Optimizer = "" // as before optimizers were chosen
	}
	if s.legacyContext {
		s.ContextLength = 0 // as before runs chose their context length
	}
	b, _ := json.Marshal(struct {
		Spec
		EvalPrompts, Threads, KeepCheckpoints, CheckpointEvery, AdapterOnly any // do not change the weights
	}{Spec: s})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// Run trains spec in workDir (created if needed), resuming from the newest
// checkpoint there. See the package comment for the guarantees.
func Run(ctx context.Context, spec Spec, workDir string, obs Observer) (*Result, error) {
	return run(ctx, spec, workDir, obs, nil, DistOptions{})
}

// run is Run, as one rank of the data-parallel group coll when it is not
// nil (see RunDistributed).
func run(ctx context.Context, spec Spec, workDir string, obs Observer, coll collective.Collective, dopt DistOptions) (*Result, error) {
	if obs == nil {
		obs = NopObserver{}
	}
	spec, err := spec.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := spec.checkAdapter(); err != nil {
		return nil, err
	}
	if coll != nil {
		spec.nodes = coll.Size() // a refusal for memory says how many more would fit
	}
	if dopt.ShardParameters && coll != nil && coll.Size() > 1 {
		spec.shardRanks = coll.Size() // the context length is chosen for a rank's share of the state
	}
	if dopt.ShardOptimizer && coll != nil && coll.Size() > 1 {
		spec.zero1Ranks = coll.Size() // and for a rank's share of the moments
	}
	task, err := dataset.ParseTask(spec.Task)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	// The context length next: the data's rows depend on it, and a run
	// that cannot fit is refused before any work.
	cfg, err := engine.LoadConfig(spec.ModelDir)
	if err != nil {
		return nil, err
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: spec.Threads})
	if err != nil {
		return nil, err
	}
	cc, err := chooseContext(spec, cfg, dev, workDir, 0)
	if err != nil {
		return nil, err
	}
	spec.ContextLength, spec.legacyContext = cc.Length, cc.Legacy
	obs.OnLog(fmt.Sprintf("context length %d: %s", cc.Length, cc.Why))
	// Data first: it is the likeliest thing to be wrong.
	prep, err := prepareData(ctx, spec, task, workDir, obs)
	if err != nil {
		return nil, err
	}
	defer prep.Close()
	r, err := newRunner(spec, prep, workDir, obs, coll, dopt)
	if err != nil {
		return nil, err
	}
	if len(spec.EvalPrompts) > 0 && r.sh != nil {
		obs.OnLog("eval prompts skipped: no rank holds the whole model while its parameters are sharded; the registered model answers them")
	} else if len(spec.EvalPrompts) > 0 {
		if r.prompts, err = generate.NewPrompter(spec.ModelDir, task == dataset.Chat); err != nil {
			return nil, err
		}
	}
	var st ckptState
	if r.leader() {
		st, err = r.resume(prep.Fingerprint())
	}
	if err == nil {
		err = r.syncFromLeader(ctx, &st)
	}
	if err != nil {
		return nil, err
	}
	trained := fmt.Sprintf("%d parameters", r.m.Config.NumParams())
	if r.a != nil {
		trained = fmt.Sprintf("%s: %d adapter parameters on a frozen base of %d", spec.LoRA, len(r.a.Params), r.m.Config.NumParams())
	}
	obs.OnLog(fmt.Sprintf("training %d steps (%s) of %d rows × %d tokens, lr %g, %s, %s",
		r.totalSteps, spec.Duration, r.rps, prep.ContextLength(), spec.LearningRate, spec.Precision, trained))
	if err := r.loop(ctx, &st); err != nil {
		return nil, err
	}
	res := &Result{Steps: st.Step, TokensSeen: st.TokensSeen, TrainLoss: st.LastLoss,
		EvalLoss: r.lastEval, DataFingerprint: prep.Fingerprint()}
	if r.sh != nil && r.a == nil { // every rank sends the leader its shards
		if res.ModelDir, err = r.saveFinalSharded(ctx); err != nil {
			return nil, err
		}
		return res, nil
	}
	if r.zero1 != nil {
		if err := r.zero1.SyncParams(ctx); err != nil {
			return nil, err
		}
	}
	if !r.leader() {
		return res, nil // the leader writes the model
	}
	if r.a != nil {
		res.ModelDir, res.AdapterDir, err = r.saveFinalLoRA()
	} else {
		res.ModelDir, err = r.saveFinal()
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// prepareData tokenizes and packs the data into workDir/data (or loads it
// from there), logging progress every 10%.
func prepareData(ctx context.Context, spec Spec, task dataset.Task, workDir string, obs Observer) (*dataset.Prepared, error) {
	obs.OnLog("preparing data " + spec.TrainData)
	lastPct := -1
	prep, err := dataset.Prepare(ctx, dataset.PrepareSpec{ModelDir: spec.ModelDir, Task: task, Data: spec.TrainData,
		CacheDir: filepath.Join(workDir, "data"), Options: spec.dataOptions()}, func(done, total int64) {
		if total > 0 {
			if pct := int(100 * done / total); pct/10 != lastPct/10 {
				lastPct = pct
				obs.OnLog(fmt.Sprintf("preparing data: %d%%", pct))
			}
		}
	})
	if err != nil {
		return nil, err
	}
	stats, R := prep.Train().Stats(), prep.Train().NumRows()
	if R == 0 {
		prep.Close()
		return nil, fmt.Errorf("train_data_path %s: no trainable rows after preparation", spec.TrainData)
	}
	if prep.FromCache {
		obs.OnLog("data loaded from cache " + prep.Fingerprint())
	}
	obs.OnLog(fmt.Sprintf("data: %d examples, %d tokens (%d trained), %d rows of %d tokens, packing %.1f%%",
		stats.Examples, stats.Tokens, stats.TrainedTokens, R, prep.ContextLength(), 100*stats.Efficiency))
	return prep, nil
}

// newRunner loads the model and its optimizer (this rank's shard of it
// when dopt shards it) and plans the steps.
func newRunner(spec Spec, prep *dataset.Prepared, workDir string, obs Observer, coll collective.Collective, dopt DistOptions) (*runner, error) {
	if coll != nil {
		spec.nodes = coll.Size() // a refusal for memory says how many more would fit
	}
	if dopt.ShardParameters && coll != nil && coll.Size() > 1 {
		return newShardedRunner(spec, prep, workDir, obs, coll)
	}
	m, err := loadModel(spec, prep.ContextLength(), obs)
	if err != nil {
		return nil, err
	}
	var a *engine.Adapter
	var o optim.Optimizer
	var z *dataparallel.Zero1
	switch {
	case spec.Method == "lora":
		a, o, err = newLoRA(spec, m)
	case dopt.ShardOptimizer && coll != nil && coll.Size() > 1:
		if z, err = dataparallel.NewZero1(coll, m, spec.NewRanges()); err == nil {
			o = z.O
		}
	default:
		o, err = spec.NewOptimizer(m, nil)
	}
	if err != nil {
		return nil, err
	}
	r := &runner{spec: spec, m: m, a: a, o: o, coll: coll, zero1: z}
	return r, r.start(prep, workDir, obs)
}

// start gives a runner whose model and optimizer are set its data, work
// dir and observer, and plans its steps.
func (r *runner) start(prep *dataset.Prepared, workDir string, obs Observer) error {
	r.obs, r.workDir, r.orders = obs, workDir, map[int][]int{}
	r.train, r.eval = prep.Train(), prep.Eval()
	r.R, r.rps = r.train.NumRows(), r.spec.BatchRows*r.spec.GradAccum
	return r.plan(r.train.Stats().Tokens)
}

// newLoRA attaches the run's adapter to m (whole on every rank) and
// creates its optimizer.
func newLoRA(spec Spec, m *engine.Model) (*engine.Adapter, optim.Optimizer, error) {
	a, err := newAdapter(spec, m)
	if err != nil {
		return nil, nil, err
	}
	o, err := spec.NewOptimizer(m, a)
	return a, o, err
}

// planModel opens the device and plans the model's options for spec
// (for one rank's share of the state when spec.shardRanks > 1, of the
// moments when spec.zero1Ranks > 1), fitted
// to memory for ctxLen-token rows; it logs the plan's notes.
func planModel(spec Spec, ctxLen int, obs Observer) (*engine.Config, engine.Device, engine.Options, error) {
	cfg, err := engine.LoadConfig(spec.ModelDir)
	if err != nil {
		return nil, nil, engine.Options{}, err
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: spec.Threads})
	if err != nil {
		return nil, nil, engine.Options{}, err
	}
	opts, notes, err := planOptions(spec, cfg, dev, ctxLen, 0)
	for _, n := range notes {
		obs.OnLog(n)
	}
	return cfg, dev, opts, err
}

// weightsDir is where the run's initial weights are: the custom weights
// when given, else the base model.
func (s Spec) weightsDir() string { return cmp.Or(s.InitWeights, s.ModelDir) }

// loadModel loads the base model (or the custom weights over its shape),
// fitted to memory, with activations reserved for ctxLen-token rows.
func loadModel(spec Spec, ctxLen int, obs Observer) (*engine.Model, error) {
	cfg, dev, opts, err := planModel(spec, ctxLen, obs)
	if err != nil {
		return nil, err
	}
	m, err := engine.Load(spec.weightsDir(), dev, opts)
	if err != nil {
		return nil, err
	}
	if spec.InitWeights != "" && !sameShape(m.Config, cfg) {
		return nil, fmt.Errorf("custom_weights_path %s: its config (%d layers, hidden %d, vocab %d) does not match the base model's", spec.InitWeights, m.Config.NumHiddenLayers, m.Config.HiddenSize, m.Config.VocabSize)
	}
	m.Reserve(spec.BatchRows, ctxLen)
	return m, nil
}

// planOptions chooses the model's options for the run and fits them to
// avail bytes (0: what the machine has). A LoRA run plans its frozen base
// (Options.LoRA: no base gradients or moments), held only in bf16 when it
// computes in bf16, except for a mixture of experts, which the decoder of
// the eval prompts cannot run on a frozen bf16 base.
func planOptions(spec Spec, cfg *engine.Config, dev engine.Device, ctxLen int, avail int64) (engine.Options, []string, error) {
	opts, err := baseOptions(spec, cfg)
	if err != nil {
		return opts, nil, err
	}
	got, notes, err := cfg.Fit(dev, opts, spec.BatchRows, ctxLen, avail)
	adviseNodes(err, spec, cfg, dev, opts, ctxLen, avail)
	return got, notes, err
}

// baseOptions are the model's options for the run before Fit.
func baseOptions(spec Spec, cfg *engine.Config) (engine.Options, error) {
	opts := engine.Options{Recompute: spec.Recompute, BF16: spec.Precision == "bf16", ShardRanks: spec.shardRanks, OptimizerStates: spec.OptimizerStates()}
	if spec.Method == "lora" {
		lc := spec.loraConfig()
		opts.LoRA = &lc
		opts.FrozenBF16 = opts.BF16 && !cfg.MoE()
		if err := cfg.CheckQuantizeBase(spec.LoRA.QuantizeBase); err != nil {
			return opts, &settings.Error{Setting: "lora.quantize_base", Problem: err.Error(), Fix: "train a LoRA on this model without quantize_base"}
		}
		opts.QuantizeBase, opts.NF4Embeddings = spec.LoRA.QuantizeBase, spec.LoRA.QuantizeEmbeddings
	}
	opts.Rank = dataparallel.Zero1Rank(spec.zero1Ranks, opts) // ZeRO-1: a rank's moments and exchange buffers
	return opts, nil
}

// plan turns the duration into rows and optimizer steps, and sets the
// learning-rate schedule. tokens is the train split's token count.
func (r *runner) plan(tokens int64) error {
	switch d := r.spec.Duration; {
	case d.Batches > 0:
		r.totalRows = int64(d.Batches) * int64(r.rps)
	case d.Tokens > 0:
		perRow := float64(tokens) / float64(r.R)
		r.totalRows = int64(math.Ceil(float64(d.Tokens) / perRow))
	default:
		r.totalRows = int64(math.Ceil(d.Epochs * float64(r.R)))
	}
	r.totalSteps = int((r.totalRows + int64(r.rps) - 1) / int64(r.rps))
	r.sched = r.spec.schedule(r.totalSteps)
	if err := r.sched.Validate(); err != nil {
		return err
	}
	r.obs.OnLog(fmt.Sprintf("optimizer: %s; schedule: %s", r.o, r.sched))
	return nil
}

// resume restores the newest checkpoint of the work dir, if any, after
// checking it belongs to this data and these settings.
func (r *runner) resume(dataFingerprint string) (ckptState, error) {
	fp := r.spec.fingerprint()
	st := ckptState{DataFingerprint: dataFingerprint, SpecFingerprint: fp}
	ckpts, err := listCheckpoints(r.workDir)
	if err != nil || len(ckpts) == 0 {
		return st, err
	}
	last := ckpts[len(ckpts)-1]
	// The fingerprints first: other settings may mean other shapes.
	if got, err := readState(last); err != nil {
		return st, err
	} else if got.DataFingerprint != st.DataFingerprint || got.SpecFingerprint != fp {
		return st, fmt.Errorf("work dir %s holds checkpoints of a run with other data or settings; use a new work dir", r.workDir)
	}
	if r.sh != nil && r.a == nil { // syncSharded reads it and deals the shards out
		r.resumeDir = last
		got, err := readState(last)
		if err == nil {
			r.obs.OnLog(fmt.Sprintf("resuming from checkpoint %s (step %d of %d)", last, got.Step, r.totalSteps))
		}
		return got, err
	}
	o := r.o
	if r.zero1 != nil {
		// The checkpoint holds every moment; syncFromLeader deals them out.
		if r.resumed, err = r.wholeState(); err != nil {
			return st, err
		}
		o = r.resumed
	}
	got, err := loadCheckpoint(last, r.m, r.a, o)
	if err != nil {
		return st, err
	}
	r.obs.OnLog(fmt.Sprintf("resumed from checkpoint %s (step %d of %d)", last, got.Step, r.totalSteps))
	return got, nil
}

// loop trains from st to the last step, checkpointing on schedule. When ctx
// is cancelled it saves a stop checkpoint of the progress since the last
// one (state only: no eval, no eval prompts, nothing that needs ctx) and
// returns ctx's error.
func (r *runner) loop(ctx context.Context, st *ckptState) error {
	start, startStep, savedAt := time.Now(), st.Step, st.Step
	for st.Step < r.totalSteps {
		if err := r.stopped(ctx); err != nil {
			if st.Step > savedAt {
				if serr := r.saveAll(ctx, st); serr != nil {
					return errors.Join(err, serr)
				}
			}
			return err
		}
		t0 := time.Now()
		lr := r.sched.LR(st.Step)
		loss, tokens, res, err := r.step(ctx, st.Step, lr)
		if err != nil {
			return fmt.Errorf("step %d: %w", st.Step+1, err)
		}
		prevEpoch := r.epochAt(st.Step)
		st.Step++
		st.TokensSeen += tokens
		st.LastLoss = loss
		st.Epoch = r.epochAt(st.Step)
		dt, elapsed := time.Since(t0), time.Since(start)
		r.obs.OnStep(StepMetrics{Step: st.Step, TotalSteps: r.totalSteps, Epoch: st.Epoch, Loss: loss, LR: lr, GradNorm: res.GradNorm,
			TokensPerSec: float64(tokens) / dt.Seconds(), TokensSeen: st.TokensSeen, Elapsed: elapsed,
			ETA: time.Duration(float64(elapsed) / float64(st.Step-startStep) * float64(r.totalSteps-st.Step))})
		epochEnd := math.Floor(st.Epoch) > math.Floor(prevEpoch)
		if st.Step == r.totalSteps || epochEnd || (r.spec.CheckpointEvery > 0 && st.Step%r.spec.CheckpointEvery == 0) {
			if err := r.checkpointAll(ctx, st); err != nil {
				return err
			}
			savedAt = st.Step
		}
	}
	return nil
}

// saveFinal writes the final model (bf16, HF layout) to workDir/final.
func (r *runner) saveFinal() (string, error) {
	return r.writeFinal(func(dir string) error { return r.m.Save(dir, engine.SaveOptions{SourceDir: r.spec.ModelDir}) })
}

// writeFinal writes the final model with save into a temporary directory
// and renames it to workDir/final when the fence allows.
func (r *runner) writeFinal(save func(dir string) error) (string, error) {
	final := filepath.Join(r.workDir, "final")
	if err := os.RemoveAll(final + ".tmp"); err != nil {
		return "", err
	}
	if err := save(final + ".tmp"); err != nil {
		return "", err
	}
	if err := fence(r.obs, "final model"); err != nil {
		os.RemoveAll(final + ".tmp")
		return "", err
	}
	if err := os.RemoveAll(final); err != nil {
		return "", err
	}
	if err := os.Rename(final+".tmp", final); err != nil {
		return "", err
	}
	return final, nil
}

// runner holds the state of the training loop.
type runner struct {
	spec       Spec
	m          *engine.Model
	a          *engine.Adapter // the trained adapter of a LoRA run, attached to m; nil for full fine-tuning
	o          optim.Optimizer
	obs        Observer
	train      *dataset.Split
	eval       *dataset.Split
	prompts    *generate.Prompter
	R, rps     int
	totalRows  int64
	totalSteps int
	sched      optim.Schedule
	workDir    string
	orders     map[int][]int // epoch → row order
	lastEval   float64
	coll       collective.Collective // the data-parallel group; nil in a one-process run
	// zero1 shards the optimizer state (DistOptions.ShardOptimizer):
	// every rank updates [0, zero1.Front()), the embeddings, and holds
	// their moments before its shard's (zero1.Pieces); resumed and
	// gathered are the leader's whole optimizer state while it resumes
	// or saves.
	zero1             *dataparallel.Zero1
	resumed, gathered optim.RangeOptimizer
	// sh, when the parameters are sharded (ZeRO stage 3), is this rank's
	// shard of them; resumeDir the checkpoint the leader resumes from.
	sh        *dataparallel.Sharded
	resumeDir string
}

// epochAt is the fractional epoch after `steps` optimizer steps.
func (r *runner) epochAt(steps int) float64 {
	return float64(min(int64(steps)*int64(r.rps), r.totalRows)) / float64(r.R)
}

// row returns global row k of the run: rows are consumed epoch after epoch,
// each epoch in its own seeded order, so the data position is a function of
// the step alone and resuming needs no iterator state.
func (r *runner) row(k int64) (dataset.Row, error) {
	e := int(k / int64(r.R))
	order, ok := r.orders[e]
	if !ok {
		clear(r.orders)
		order = r.train.Epoch(e, r.spec.Seed)
		r.orders[e] = order
	}
	return r.train.Row(order[k%int64(r.R)])
}

// batch builds the micro-batch of rows [lo, hi) and counts its input
// tokens (segment 0 is padding).
func (r *runner) batch(lo, hi int64, row func(int64) (dataset.Row, error)) (*engine.Batch, int64, error) {
	var ids, labels, segs [][]int
	var tokens int64
	for j := lo; j < hi; j++ {
		rw, err := row(j)
		if err != nil {
			return nil, 0, err
		}
		ids, labels, segs = append(ids, rw.InputIDs), append(labels, rw.Labels), append(segs, rw.SegmentIDs)
		for _, s := range rw.SegmentIDs {
			if s != 0 {
				tokens++
			}
		}
	}
	bt, err := engine.NewBatch(ids, labels, segs, r.m.Config.VocabSize)
	return bt, tokens, err
}

// step runs one optimizer step (all its micro-batches) at learning rate lr.
// With a data-parallel group each rank runs its share of the micro-batches
// (see mine) and the counts, gradients and loss are summed across ranks,
// so every rank takes the step one process would.
func (r *runner) step(ctx context.Context, step int, lr float64) (loss float64, tokens int64, res optim.StepResult, err error) {
	first := int64(step) * int64(r.rps)
	last := min(first+int64(r.rps), r.totalRows)
	var batches []*engine.Batch
	var starts []int64
	scored := 0
	for i, k := 0, first; k < last; i, k = i+1, k+int64(r.spec.BatchRows) {
		if !r.mine(i) {
			continue
		}
		bt, n, err := r.batch(k, min(k+int64(r.spec.BatchRows), last), r.row)
		if err != nil {
			return 0, 0, res, err
		}
		tokens += n
		scored += bt.Scored()
		batches, starts = append(batches, bt), append(starts, k)
	}
	if scored, tokens, err = dataparallel.SumCounts(ctx, r.coll, scored, tokens); err != nil {
		return 0, 0, res, err
	}
	if scored == 0 {
		return 0, tokens, res, nil
	}
	if r.sh != nil {
		loss, res, err = r.stepSharded(ctx, batches, starts, first, last, scored, lr)
		return loss, tokens, res, err
	}
	if r.a != nil {
		r.a.ZeroGrad()
	} else {
		r.m.OverwriteGrads() // the first micro-batch writes the gradients: no zeroing pass
	}
	var sum float64
	red := dataparallel.Start(ctx, r.coll, r.m, r.a)
	if r.zero1 != nil {
		red = r.zero1.Start(ctx) // each shard's gradients to its rank
	}
	for i, bt := range batches {
		if i == len(batches)-1 {
			red.Attach() // the last pass finishes each layer's gradients
			if red == nil && r.a == nil {
				r.m.FuseGradNorm() // the optimizer's clipping norm, as it finishes them
			}
		}
		// LoRA dropout masks are a function of the micro-batch's first
		// row, so a resumed run draws the masks of an uninterrupted one.
		s, _ := r.m.ForwardBackwardDropout(bt, 1/float32(scored), dropoutSeed(r.spec.Seed, starts[i]))
		sum += s
	}
	if sum, err = red.Finish(sum); err != nil {
		return 0, 0, res, err
	}
	loss = sum / float64(scored)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return loss, tokens, res, fmt.Errorf("loss is %v: the learning rate may be too high", loss)
	}
	switch {
	case r.a != nil:
		res, err = r.o.StepAdapter(r.a, lr)
	case r.zero1 != nil:
		res, err = r.zero1.Step(ctx, lr)
	default:
		res, err = r.o.Step(r.m, lr)
	}
	return loss, tokens, res, err
}

// checkpoint evaluates, completes eval prompts and saves the state. A
// cancel while the prompts are completed still saves the state: the
// progress is kept, and the loop then stops.
func (r *runner) checkpoint(ctx context.Context, st *ckptState) error {
	if err := r.report(ctx, st.Step); err != nil && ctx.Err() == nil {
		return err
	}
	return r.save(st)
}

// report evaluates on the eval data and completes the eval prompts (with
// a LoRA run's adapter attached: the decoder applies it).
func (r *runner) report(ctx context.Context, step int) error {
	if r.eval != nil && r.eval.NumRows() > 0 {
		em, err := r.evaluate()
		if err != nil {
			return err
		}
		em.Step = step
		r.lastEval = em.Loss
		r.obs.OnEval(em)
	}
	if r.prompts == nil {
		return nil
	}
	var outs []PromptOutput
	for i, prompt := range r.spec.EvalPrompts {
		text, err := r.prompts.Complete(ctx, r.m, prompt, generate.EvalPromptParams(r.spec.Seed+uint64(step)+uint64(i)))
		if err != nil {
			return fmt.Errorf("eval prompt %d: %w", i+1, err)
		}
		outs = append(outs, PromptOutput{Prompt: prompt, Output: text})
	}
	r.obs.OnPromptOutputs(step, outs)
	return nil
}

// save writes the checkpoint of st and reports it.
func (r *runner) save(st *ckptState) error {
	o := r.o
	if r.gathered != nil {
		o = r.gathered // the whole optimizer state of a sharded run
	}
	dir, pruned, err := saveCheckpoint(r.workDir, r.spec.ModelDir, r.m, r.a, o, *st, r.spec.KeepCheckpoints,
		func() error { return fence(r.obs, fmt.Sprintf("checkpoint of step %d", st.Step)) })
	if err != nil {
		return err
	}
	r.obs.OnCheckpoint(Checkpoint{Step: st.Step, Epoch: st.Epoch, Dir: dir, Pruned: pruned})
	return nil
}

func (r *runner) evaluate() (EvalMetrics, error) {
	var sum float64
	var tokens, correct int
	n := int64(r.eval.NumRows())
	evalRow := func(i int64) (dataset.Row, error) { return r.eval.Row(int(i)) }
	for i := int64(0); i < n; i += int64(r.spec.BatchRows) {
		bt, _, err := r.batch(i, min(i+int64(r.spec.BatchRows), n), evalRow)
		if err != nil {
			return EvalMetrics{}, err
		}
		e := r.m.Evaluate(bt)
		sum, tokens, correct = sum+e.LossSum, tokens+e.Tokens, correct+e.Correct
	}
	if tokens == 0 {
		return EvalMetrics{}, nil
	}
	loss := sum / float64(tokens)
	return EvalMetrics{Loss: loss, Perplexity: math.Exp(loss), TokenAccuracy: float64(correct) / float64(tokens)}, nil
}

func sameShape(a, b *engine.Config) bool {
	return a.VocabSize == b.VocabSize && a.HiddenSize == b.HiddenSize && a.IntermediateSize == b.IntermediateSize &&
		a.NumHiddenLayers == b.NumHiddenLayers && a.NumAttentionHeads == b.NumAttentionHeads &&
		a.NumKeyValueHeads == b.NumKeyValueHeads && a.HeadDim == b.HeadDim && a.TieWordEmbeddings == b.TieWordEmbeddings
}
