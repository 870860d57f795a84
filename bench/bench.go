// Package bench measures training throughput and memory of the engine on
// random data, in the same shape as the PyTorch reference script
// tools/bench/torch_train.py, so the two can be compared side by side.
package bench

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"hone/collective"
	"hone/dataparallel"
	"hone/engine"
	"hone/optim"
	"hone/settings"
	"hone/train"
)

// TrainSpec describes one training benchmark.
type TrainSpec struct {
	Config    *engine.Config
	Seq       int
	Batch     int
	Steps     int // timed steps, after one warm-up step
	Precision string
	Threads   int
	Recompute bool
	// KeepAttention (with Recompute) keeps the attention outputs for the
	// recomputation (engine.Options.KeepAttention).
	KeepAttention bool
	// KeepAttentionLayers k > 0 keeps only k layers' attention outputs
	// (engine.Options.KeepAttentionLayers; it implies KeepAttention).
	KeepAttentionLayers int
	// CheckpointEvery k > 1 (with Recompute) keeps residual checkpoints,
	// segments of at most k layers (engine.Options.CheckpointEvery).
	CheckpointEvery int
	Compact         bool // bf16 weights converted per layer (engine.Options.CompactBF16)
	// LossChunk is the loss's rows per chunk (engine.Options.LossChunk;
	// 0: the engine's default for the vocabulary).
	LossChunk int
	Seed      uint64
	// Optimizer is "adamw" (the default, also when empty) or "lionw",
	// made as a training run makes it (train.Spec).
	Optimizer string
	// LoRARank > 0 trains a LoRA adapter of this rank (alpha LoRAAlpha,
	// default 2·rank) on LoRATargets (default the architecture's) instead of
	// the whole model; with bf16 precision the frozen base is held in bf16
	// only (engine.Options.FrozenBF16), with fp32 it stays fp32.
	LoRARank    int
	LoRAAlpha   float64
	LoRATargets []string
	// LoRADropout is the adapter's dropout (hone create's default is
	// 0.05); each step draws its masks from the step's seed.
	LoRADropout float64
	// QuantizeBase "nf4" (with LoRARank) holds the frozen base's layer
	// matrices in NF4 (QLoRA, engine.Options.QuantizeBase).
	QuantizeBase string
	// NF4Embeddings (with QuantizeBase) holds the embeddings and the
	// output head in NF4 too (engine.Options.NF4Embeddings).
	NF4Embeddings bool
	// KernelTimes, when non-nil, receives time per device method.
	KernelTimes func(lines []string)
	// Progress, when non-nil, is called after each step (step 0 is the
	// warm-up) with its seconds and the process's peak RSS so far, so a
	// long-context step that takes many minutes shows its figures before
	// the run ends.
	Progress func(step int, seconds float64, peakRSS int64)
	// Coll, when set, makes this process one rank of a data-parallel
	// group: it trains Batch/Size rows a step and sums the gradients
	// across ranks (see train_ranks.go).
	Coll collective.Collective
	// ShardOptimizer shards the optimizer state across the ranks (ZeRO
	// stage 1, as train.DistOptions.ShardOptimizer).
	ShardOptimizer bool
	// ShardParameters shards the parameters, gradients and optimizer
	// state across the ranks (ZeRO stage 3, as train.DistOptions.ShardParameters);
	// fp32 full fine-tuning only.
	ShardParameters bool
	// PlanRanks is the number of ranks --plan plans for (each rank's
	// share of Batch; with ShardParameters, its shard of the state).
	PlanRanks int
	// MFU times the device's matmul ceiling (MeasureCeiling) before and
	// after the steps and reports the step's model FLOPs/s as a fraction
	// of it (TrainCeiling).
	MFU bool
	// CeilingTime is how long each ceiling measurement times products
	// (CeilingTime when 0).
	CeilingTime time.Duration
}

// TrainResult is what `hone bench train --json` prints.
type TrainResult struct {
	Engine       string    `json:"engine"`
	Method       string    `json:"method"` // full or lora
	Optimizer    string    `json:"optimizer"`
	Device       string    `json:"device,omitempty"`
	Precision    string    `json:"precision"`
	Threads      int       `json:"threads"`
	Params       int64     `json:"params"`
	Trainable    int64     `json:"trainable_params"`
	LoRARank     int       `json:"lora_rank,omitempty"`
	LoRATargets  []string  `json:"lora_targets,omitempty"`
	FrozenBF16   bool      `json:"frozen_bf16,omitempty"`
	QuantizeBase string    `json:"quantize_base,omitempty"`
	NF4Bytes     int64     `json:"nf4_bytes,omitempty"` // the quantized matrices' storage
	NF4Embed     bool      `json:"nf4_embeddings,omitempty"`
	Seq          int       `json:"seq"`
	Batch        int       `json:"batch"`
	Steps        int       `json:"steps"`
	TokensPerS   float64   `json:"tokens_per_s"`
	StepSeconds  []float64 `json:"step_seconds"`
	// StepCPUSeconds is the median step's CPU time (user and system, all
	// threads; with ranks, summed over the ranks): on a machine others
	// share it moves less than the wall-clock time.
	StepCPUSeconds float64 `json:"step_cpu_seconds"`
	GFLOPs         float64 `json:"gflop_per_s"`
	PeakRSSBytes   int64   `json:"peak_rss_bytes"` // up to the steps' end
	Recompute      bool    `json:"recompute"`
	// KeepAttention: the recomputation reused the attention outputs kept
	// from the forward pass (engine.Options.KeptAttention: plain
	// recomputation keeps the last layer's).
	KeepAttention bool `json:"keep_attention,omitempty"`
	// KeepAttentionLayers: only so many layers' (a segment's, with
	// checkpoints) were kept; 0 every layer's.
	KeepAttentionLayers int `json:"keep_attention_layers,omitempty"`
	// CheckpointEvery is the residual checkpoints' segment length (0: none).
	CheckpointEvery int       `json:"checkpoint_every,omitempty"`
	CompactBF16     bool      `json:"compact_bf16"`
	LossChunk       int       `json:"loss_chunk"` // rows per loss chunk the run used
	Notes           []string  `json:"notes,omitempty"`
	Losses          []float64 `json:"losses"`
	Ranks           int       `json:"ranks,omitempty"` // data-parallel ranks (processes); Batch is the global batch
	// ShardOptimizer: the ranks shard the optimizer state (ZeRO stage 1).
	ShardOptimizer bool `json:"shard_optimizer,omitempty"`

	// MFU is GFLOPs over the device's measured matrix-product ceiling in
	// this precision (CeilingGFLOPs, timed in the same process on the
	// same threads; Ceiling says how); set when TrainSpec.MFU asks for
	// it. With ranks: all ranks' FLOPs over the sum of their ceilings.
	MFU           float64       `json:"mfu,omitempty"`
	CeilingGFLOPs float64       `json:"ceiling_gflop_per_s,omitempty"`
	Ceiling       *TrainCeiling `json:"ceiling,omitempty"`
	ISA           string        `json:"isa,omitempty"`
	// BLAS is set by the PyTorch peer only (tools/bench/torch_blas.py).
	BLAS *PeerBLAS `json:"blas,omitempty"`
	// StepCollective is what this rank handed the collective in the last
	// timed step (with ranks): the scaling model's StepTraffic predicts it.
	StepCollective *collective.Traffic `json:"step_collective,omitempty"`
}

// FLOPsPerToken is 6 per weight a token multiplies (forward and backward
// of every matmul; with experts, only the routed ones) plus the attention
// products (QKᵀ and PV, causal so half of T², three passes).
func FLOPsPerToken(c *engine.Config, seq int) float64 {
	attn := 6 * float64(c.NumHiddenLayers) * float64(seq) * float64(c.QDim())
	return 6*float64(matmulParams(c)) + attn
}

// matmulParams are the weights a token multiplies: the active parameters
// less an untied input embedding, which is a row lookup, not a product
// (a tied one is the output head's matrix and counts once).
func matmulParams(c *engine.Config) int64 {
	n := c.ActiveParams()
	if !c.TieWordEmbeddings {
		n -= int64(c.VocabSize) * int64(c.HiddenSize)
	}
	return n
}

// Train runs the benchmark: random tokens, AdamW or LionW with clipping,
// one optimizer step per batch.
func Train(ctx context.Context, s TrainSpec) (*TrainResult, error) {
	if s.Precision == "" {
		s.Precision = "fp32"
	}
	if s.Precision != "fp32" && s.Precision != "bf16" {
		return nil, fmt.Errorf("bench: precision %q: want fp32 or bf16", s.Precision)
	}
	if s.Seq <= 0 || s.Batch <= 0 || s.Steps <= 0 {
		return nil, fmt.Errorf("bench: seq, batch and steps must be positive")
	}
	if s.QuantizeBase != "" && s.LoRARank <= 0 {
		return nil, fmt.Errorf("bench: --quantize-base %s quantizes a frozen base; give --lora-rank", s.QuantizeBase)
	}
	if s.NF4Embeddings && s.QuantizeBase == "" {
		return nil, fmt.Errorf("bench: --nf4-embeddings quantizes the embeddings and head of an NF4 base; give --quantize-base nf4")
	}
	if err := s.Config.CheckQuantizeBase(s.QuantizeBase); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	ts, err := s.optimizer()
	if err != nil {
		return nil, err
	}
	global, err := s.splitBatch()
	if err != nil {
		return nil, err
	}
	var counter *collective.Counting
	if s.Coll != nil {
		counter = collective.NewCounting(s.Coll)
		s.Coll = counter
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: s.Threads})
	if err != nil {
		return nil, err
	}
	threads := s.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	var before Ceiling
	raw := dev // the ceiling's products stay out of --kernel-times
	if s.MFU {
		if before, err = s.measureCeiling(ctx, raw, true); err != nil {
			return nil, err
		}
	}
	var timed *engine.TimedDevice
	if s.KernelTimes != nil {
		timed = engine.NewTimedDevice(dev)
		dev = timed
	}
	// Like a training run, turn on memory savings when the model would not
	// fit otherwise, and say so in the result.
	base := s.options()
	if s.sharded() {
		if err := s.checkSharded(); err != nil {
			return nil, err
		}
		base.ShardRanks = s.ranks()
	}
	if s.ShardOptimizer {
		base.Rank = dataparallel.Zero1Rank(s.ranks(), base) // a rank's moments and exchange buffers, when it uses Zero1
	}
	opts, notes, err := s.Config.Fit(dev, base, s.Batch, s.Seq, 0)
	if err != nil {
		s.adviseRanks(err, dev, base, global, s.ranks(), 0)
		return nil, err
	}
	m := engine.New(s.Config, dev, opts)
	if !s.sharded() {
		m.InitRandom(s.Seed)
	}
	res := &TrainResult{Engine: "hone", Method: "full", Optimizer: ts.Optimizer, Device: dev.Name(), Precision: s.Precision, Threads: threads, Params: s.Config.NumParams(),
		Trainable: s.Config.NumParams(), Seq: s.Seq, Batch: global, Ranks: s.ranks(), Steps: s.Steps, Recompute: opts.Recompute, CompactBF16: opts.CompactBF16,
		CheckpointEvery: opts.CheckpointEvery,
		FrozenBF16:      opts.FrozenBF16 && opts.QuantizeBase == "", QuantizeBase: opts.QuantizeBase, NF4Bytes: m.NF4Bytes(), NF4Embed: opts.NF4Embeddings, Notes: notes}
	step, err := s.stepper(m, ts, res)
	if err != nil {
		return nil, err
	}
	res.LossChunk = m.Opt.LossChunk
	res.KeepAttention, res.KeepAttentionLayers = opts.KeptAttention()
	res.ShardOptimizer = base.Rank != nil
	bt, err := randomBatch(s)
	if err != nil {
		return nil, err
	}
	scale := 1 / float32(bt.Scored()*s.ranks()) // every rank's batch scores as many tokens
	var cpu []float64
	for i := 0; i <= s.Steps; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start, startCPU := time.Now(), cpuSeconds()
		var before collective.Traffic
		if counter != nil {
			before = counter.Traffic()
		}
		sum, n, err := step(bt, scale)
		if err != nil {
			return nil, err
		}
		if counter != nil {
			t := counter.Traffic().Sub(before)
			res.StepCollective = &t
		}
		dev.Sync()
		if s.Progress != nil {
			s.Progress(i, time.Since(start).Seconds(), PeakRSS())
		}
		if i == 0 && timed != nil {
			timed.Reset()
		}
		if i > 0 { // step 0 warms up primitives and page faults
			res.StepSeconds = append(res.StepSeconds, time.Since(start).Seconds())
			cpu = append(cpu, cpuSeconds()-startCPU)
			res.Losses = append(res.Losses, sum/float64(n))
		}
	}
	res.TokensPerS = float64(s.Seq*global) / median(res.StepSeconds)
	res.StepCPUSeconds = median(cpu)
	flops := FLOPsPerToken(s.Config, s.Seq)
	if res.Method == "lora" {
		flops = loraFLOPsPerToken(s.Config, s.Seq, int(res.Trainable))
	}
	res.GFLOPs = res.TokensPerS * flops / 1e9
	// The steps' peak: the ceiling's products after them hold three more
	// matrices (67 MB at CeilingSize) beside the model.
	res.PeakRSSBytes = PeakRSS()
	if s.MFU {
		after, err := s.measureCeiling(ctx, raw, false)
		if err != nil {
			return nil, err
		}
		res.setMFU(trainCeiling(s.Precision, before, after), before.ISA, s.ranks())
	}
	if timed != nil {
		s.KernelTimes(append(timed.Report(), timed.PassReport(s.Steps)...))
	}
	return res, nil
}

// measureCeiling times dev's products in the spec's precision. Ranks
// start together, so that each one's products share the machine with the
// others' as their steps do.
func (s TrainSpec) measureCeiling(ctx context.Context, dev engine.Device, peak bool) (Ceiling, error) {
	if s.Coll != nil {
		if err := s.Coll.Barrier(ctx); err != nil {
			return Ceiling{}, fmt.Errorf("bench: ranks meet to time the ceiling: %w", err)
		}
	}
	c, err := MeasureCeiling(ctx, dev, CeilingSpec{MinTime: s.CeilingTime, Precisions: []string{s.Precision}, Peak: peak})
	if err != nil {
		return c, fmt.Errorf("bench: ceiling: %w", err)
	}
	return c, nil
}

// optimizer is the spec's optimizer as a training run resolves it
// (train.Spec): AdamW at this benchmark's learning rate of 1e-4, at which
// the loss falls within a few steps, or LionW with a run's defaults, its
// learning rate included.
func (s TrainSpec) optimizer() (train.Spec, error) {
	ts := train.Spec{Optimizer: cmp.Or(s.Optimizer, settings.Optimizer), Method: "full"}
	if !slices.Contains(settings.Optimizers(), ts.Optimizer) {
		return ts, fmt.Errorf("bench: --optimizer %q: want %s", s.Optimizer, strings.Join(settings.Optimizers(), " or "))
	}
	if s.LoRARank > 0 {
		ts.Method = "lora"
	}
	if ts.Optimizer == "adamw" {
		ts.LearningRate = 1e-4
	}
	return ts.Resolve()
}

// options are the engine options the spec asks for, before Fit.
func (s TrainSpec) options() engine.Options {
	o := engine.Options{Recompute: s.Recompute, KeepAttention: s.KeepAttention || s.KeepAttentionLayers > 0, KeepAttentionLayers: s.KeepAttentionLayers,
		CheckpointEvery: s.CheckpointEvery, BF16: s.Precision == "bf16", CompactBF16: s.Compact, LossChunk: s.LossChunk,
		OptimizerStates: train.Spec{Optimizer: s.Optimizer}.OptimizerStates()}
	if s.LoRARank > 0 {
		lc := engine.LoRAConfig{Rank: s.LoRARank, Alpha: s.LoRAAlpha, Targets: s.LoRATargets, Dropout: s.LoRADropout}
		if lc.Alpha == 0 {
			lc.Alpha = 2 * float64(s.LoRARank)
		}
		o.LoRA, o.FrozenBF16, o.QuantizeBase, o.NF4Embeddings = &lc, o.BF16, s.QuantizeBase, s.NF4Embeddings
	}
	return o
}

// attachAdapter attaches a fresh PEFT-initialised adapter of lc to m and
// returns it with ts's optimizer, filling res's LoRA fields.
func (s TrainSpec) attachAdapter(m *engine.Model, lc engine.LoRAConfig, ts train.Spec, res *TrainResult) (*engine.Adapter, optim.Optimizer, error) {
	a, err := engine.NewAdapter(m.Config, m.Dev, lc)
	if err != nil {
		return nil, nil, err
	}
	a.InitPEFT(s.Seed)
	if err := m.Attach(a); err != nil {
		return nil, nil, err
	}
	opt, err := ts.NewOptimizer(m, a)
	if err != nil {
		return nil, nil, err
	}
	res.Method, res.LoRARank, res.LoRATargets, res.Trainable = "lora", lc.Rank, a.Config.Targets, int64(len(a.Params))
	return a, opt, nil
}

// stepper returns one optimizer step on a batch with ts's optimizer: full
// fine-tuning, or the adapter's step when the spec asks for LoRA (it then
// fills res's LoRA fields).
func (s TrainSpec) stepper(m *engine.Model, ts train.Spec, res *TrainResult) (func(*engine.Batch, float32) (float64, int, error), error) {
	if s.sharded() {
		return s.shardedStepper(m, ts, res)
	}
	if lc := m.Opt.LoRA; lc != nil {
		a, opt, err := s.attachAdapter(m, *lc, ts, res)
		if err != nil {
			return nil, err
		}
		var step uint64
		return func(bt *engine.Batch, scale float32) (float64, int, error) {
			a.ZeroGrad()
			red := dataparallel.Start(context.Background(), s.Coll, m, a)
			red.Attach()
			step++
			sum, n := m.ForwardBackwardDropout(bt, scale, s.Seed<<20|step) // as train does: dropout when the adapter has it
			if _, err := red.Finish(sum); err != nil {
				return 0, 0, err
			}
			_, err := opt.StepAdapter(a, ts.LearningRate)
			return sum, n, err
		}, nil
	}
	if m.Opt.Rank != nil { // planned as a Zero1 rank
		return s.zero1Stepper(m, ts)
	}
	opt, err := ts.NewOptimizer(m, nil)
	if err != nil {
		return nil, err
	}
	if td, ok := m.Dev.(*engine.TimedDevice); ok { // --kernel-times counts passes over these
		td.Track("weights", m.Params.Arena)
		td.Track("gradients", m.Grads.Arena)
		td.Track("bf16 weights", m.LowPrecisionParams())
		for _, st := range opt.State() {
			td.Track(st.Name, st.Buf) // AdamW's exp_avg and exp_avg_sq, LionW's exp_avg
		}
	}
	return func(bt *engine.Batch, scale float32) (float64, int, error) {
		m.OverwriteGrads() // as train does
		red := dataparallel.Start(context.Background(), s.Coll, m, nil)
		red.Attach()
		if red == nil {
			m.FuseGradNorm() // as train does
		}
		sum, n := m.ForwardBackward(bt, scale)
		if _, err := red.Finish(sum); err != nil {
			return 0, 0, err
		}
		_, err := opt.Step(m, ts.LearningRate)
		return sum, n, err
	}, nil
}

// randomBatch is s.Batch rows of s.Seq random tokens, every one scored.
func randomBatch(s TrainSpec) (*engine.Batch, error) {
	ids := randomIDs(s.Seed, s.rank(), s.Batch, s.Seq, s.Config.VocabSize)
	return engine.NewBatch(ids, ids, nil, s.Config.VocabSize)
}

// randomIDs are rank's rows of random token ids.
func randomIDs(seed uint64, rank, rows, seq, vocab int) [][]int {
	r := rand.New(rand.NewPCG(seed, 1+uint64(rank)))
	ids := make([][]int, rows)
	for i := range ids {
		ids[i] = make([]int, seq)
		for j := range ids[i] {
			ids[i][j] = r.IntN(vocab)
		}
	}
	return ids
}

// RandomDistinctIDs is the number of distinct token ids that get an
// embedding gradient in the random batches of `hone bench train` over
// ranks, rows per rank: the embedding rows its gradient reduction moves.
// A row's last position scores nothing (its target would be the next
// row's), so its token gets no gradient from it.
func RandomDistinctIDs(seed uint64, ranks, rows, seq, vocab int) int {
	seen := map[int]bool{}
	for q := range ranks {
		for _, row := range randomIDs(seed, q, rows, seq, vocab) {
			for _, id := range row[:seq-1] {
				seen[id] = true
			}
		}
	}
	return len(seen)
}

func median(x []float64) float64 {
	sorted := slices.Clone(x)
	slices.Sort(sorted)
	med := sorted[len(sorted)/2]
	if len(sorted)%2 == 0 {
		med = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
	}
	return med
}

// cpuSeconds is the process's CPU time so far, user and system.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// PeakRSS reads the process's peak resident set (VmHWM) from /proc.
func PeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
