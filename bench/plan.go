package bench

import (
	"fmt"

	"hone/dataparallel"
	"hone/engine"
)

// PlanResult is what `hone bench train --plan --json` prints. Its
// peak_bytes and parts (engine.MemoryPlan) are the plan of what would run
// on this machine: the options asked for plus the savings Fit turns on to
// fit the memory available (listed in Savings; when even they do not fit,
// the plan with every saving tried, and Refusal says so). AskedBytes is
// the plan of the options as asked, before any saving.
type PlanResult struct {
	engine.MemoryPlan
	Seq       int    `json:"seq"`
	Batch     int    `json:"batch"`
	Precision string `json:"precision"`
	Method    string `json:"method"`
	Optimizer string `json:"optimizer"` // its state is the plan's optimizer_state part
	// The memory options the plan is for (with Fit's savings).
	Recompute           bool `json:"recompute"`
	KeepAttention       bool `json:"keep_attention,omitempty"`        // the recomputation reuses the attention outputs of the forward pass (a segment's, with checkpoints; plain recomputation the last layer's)
	KeepAttentionLayers int  `json:"keep_attention_layers,omitempty"` // of only so many layers (a segment's, with checkpoints); 0 every layer's
	CheckpointEvery     int  `json:"checkpoint_every,omitempty"`      // residual checkpoints: segments of at most k layers
	CompactBF16         bool `json:"compact_bf16,omitempty"`
	FrozenBF16          bool `json:"frozen_bf16,omitempty"`
	// Savings names what Fit turned on beyond the options asked for.
	Savings        []string `json:"savings"`
	AskedBytes     int64    `json:"asked_peak_bytes"` // the plan of the options as asked
	AvailableBytes int64    `json:"available_bytes"`
	Fits           bool     `json:"fits"`
	Notes          []string `json:"notes,omitempty"`
	// LongestSeq is the longest row, up to the model's maximum, that fits
	// at Batch rows with Fit's savings: what a run's default context
	// length would be on this machine.
	LongestSeq int    `json:"longest_seq_that_fits"`
	Refusal    string `json:"refusal,omitempty"`
	// Ranks is the ranks planned for (TrainSpec.PlanRanks): the plan is
	// one rank's, for its share of the batch, with the state divided by
	// Ranks when ShardedParameters. RanksNeeded is the fewest ranks with
	// sharded parameters whose plan fits (with --batch raised to it when
	// it exceeds the batch), 0 when none up to 4096 does.
	Ranks             int  `json:"ranks,omitempty"`
	ShardedParameters bool `json:"sharded_parameters,omitempty"`
	RanksNeeded       int  `json:"ranks_needed,omitempty"`
	// ShardedOptimizer: with TrainSpec.ShardOptimizer the plan, its
	// savings and LongestSeq are a ZeRO-1 rank's (dataparallel.Zero1Rank:
	// its optimizer state, the exchange's buffers).
	ShardedOptimizer bool `json:"sharded_optimizer,omitempty"`
}

// Plan computes the training memory plan of s without allocating anything.
// avail is the memory to plan against (0: the machine's MemAvailable).
func Plan(s TrainSpec, avail int64) (*PlanResult, error) {
	if s.Precision == "" {
		s.Precision = "fp32"
	}
	if s.Precision != "fp32" && s.Precision != "bf16" {
		return nil, fmt.Errorf("bench: precision %q: want fp32 or bf16", s.Precision)
	}
	if s.Seq <= 0 || s.Batch <= 0 {
		return nil, fmt.Errorf("bench: seq and batch must be positive")
	}
	ts, err := s.optimizer()
	if err != nil {
		return nil, err
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: s.Threads})
	if err != nil {
		return nil, err
	}
	if avail <= 0 {
		avail = engine.MemAvailable()
	}
	opts := s.options()
	ranks := max(1, s.PlanRanks)
	if s.Batch%ranks != 0 {
		return nil, fmt.Errorf("bench: batch %d does not split evenly over %d ranks", s.Batch, ranks)
	}
	global := s.Batch
	s.Batch /= ranks
	sharded := s.ShardParameters && ranks > 1
	if sharded {
		if err := s.checkSharded(); err != nil {
			return nil, err
		}
		opts.ShardRanks = ranks
	}
	if s.ShardOptimizer {
		opts.Rank = dataparallel.Zero1Rank(ranks, opts) // Fit turns on only what a rank needs
	}
	res := &PlanResult{Seq: s.Seq, Batch: s.Batch, Precision: s.Precision, Method: "full", Optimizer: ts.Optimizer, AvailableBytes: avail,
		AskedBytes: s.Config.MemoryEstimate(dev, opts, s.Batch, s.Seq), Savings: []string{}}
	if opts.LoRA != nil {
		res.Method = "lora"
	}
	if ranks > 1 {
		res.Ranks, res.ShardedParameters, res.ShardedOptimizer = ranks, sharded, opts.Rank != nil
	}
	res.RanksNeeded, _ = s.ranksNeeded(dev, opts, global, 1, avail)
	res.LongestSeq = s.Config.LongestContext(dev, opts, s.Batch, s.Config.MaxPositionEmbeddings, avail)
	fitted, notes, err := s.Config.Fit(dev, opts, s.Batch, s.Seq, avail)
	res.Notes = notes
	res.Savings = append(res.Savings, engine.Savings(opts, fitted)...)
	res.MemoryPlan = s.Config.MemoryPlan(dev, fitted, s.Batch, s.Seq)
	res.Recompute, res.CompactBF16, res.FrozenBF16 = fitted.Recompute, fitted.CompactBF16, fitted.FrozenBF16
	res.KeepAttention, res.KeepAttentionLayers = fitted.KeptAttention()
	if fitted.Recompute && fitted.CheckpointEvery > 1 {
		res.CheckpointEvery = fitted.CheckpointEvery
	}
	if err != nil {
		s.adviseRanks(err, dev, opts, global, ranks, avail)
		res.Refusal = err.Error()
		return res, nil
	}
	res.Fits = true
	return res, nil
}
