package bench

import (
	"fmt"

	"hone/engine"
)

// PlanResult is what `hone bench train --plan --json` prints: the memory
// plan of the options asked for (engine.MemoryPlan), and what a run would
// do on this machine: whether it fits the memory available, the savings
// Fit would turn on, and the plan with them.
type PlanResult struct {
	engine.MemoryPlan
	Seq            int      `json:"seq"`
	Batch          int      `json:"batch"`
	Precision      string   `json:"precision"`
	Method         string   `json:"method"`
	Recompute      bool     `json:"recompute"`
	AvailableBytes int64    `json:"available_bytes"`
	Fits           bool     `json:"fits"`
	FittedBytes    int64    `json:"fitted_peak_bytes,omitempty"` // with Fit's savings, when they are needed and enough
	Notes          []string `json:"notes,omitempty"`
	// LongestSeq is the longest row, up to the model's maximum, that fits
	// at Batch rows with Fit's savings: what a run's default context
	// length would be on this machine.
	LongestSeq int    `json:"longest_seq_that_fits"`
	Refusal    string `json:"refusal,omitempty"`
	// Ranks is the ranks planned for (TrainSpec.PlanRanks): the plan is
	// one rank's, for its share of the batch, with the state divided by
	// Ranks when ShardedParameters. RanksNeeded is the fewest ranks with
	// sharded parameters whose plan fits, 0 when none up to 4096 does.
	Ranks             int  `json:"ranks,omitempty"`
	ShardedParameters bool `json:"sharded_parameters,omitempty"`
	RanksNeeded       int  `json:"ranks_needed,omitempty"`
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
	res := &PlanResult{MemoryPlan: s.Config.MemoryPlan(dev, opts, s.Batch, s.Seq), Seq: s.Seq, Batch: s.Batch,
		Precision: s.Precision, Method: "full", Recompute: opts.Recompute, AvailableBytes: avail}
	if opts.LoRA != nil {
		res.Method = "lora"
	}
	if ranks > 1 {
		res.Ranks, res.ShardedParameters = ranks, sharded
	}
	if opts.QuantizeBase == "" && s.Config.CheckShardable() == nil {
		res.RanksNeeded = ranksNeeded(s.Config, dev, opts, global, s.Seq, avail)
	}
	res.LongestSeq = s.Config.LongestContext(dev, opts, s.Batch, s.Config.MaxPositionEmbeddings, avail)
	fitted, notes, err := s.Config.Fit(dev, opts, s.Batch, s.Seq, avail)
	res.Notes = notes
	if err != nil {
		res.Refusal = err.Error()
		return res, nil
	}
	res.Fits = true
	if len(notes) > 0 {
		res.FittedBytes = s.Config.MemoryEstimate(dev, fitted, s.Batch, s.Seq)
	}
	return res, nil
}

// ranksNeeded is the fewest ranks (powers of two up to 4096) whose rank
// fits avail with sharded parameters and Fit's savings, each rank taking
// its share of the global batch (at least one row); 0 when none does.
func ranksNeeded(c *engine.Config, dev engine.Device, opts engine.Options, global, seq int, avail int64) int {
	for n := 1; n <= 4096; n *= 2 {
		o := opts
		o.ShardRanks = 0
		if n > 1 {
			o.ShardRanks = n
		}
		if _, _, err := c.Fit(dev, o, max(1, global/n), seq, avail); err == nil {
			return n
		}
	}
	return 0
}
