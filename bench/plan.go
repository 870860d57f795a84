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
	res := &PlanResult{MemoryPlan: s.Config.MemoryPlan(dev, opts, s.Batch, s.Seq), Seq: s.Seq, Batch: s.Batch,
		Precision: s.Precision, Method: "full", Recompute: opts.Recompute, AvailableBytes: avail}
	if opts.LoRA != nil {
		res.Method = "lora"
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
