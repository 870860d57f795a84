package bench

import (
	"testing"

	"hone/engine"
)

// --optimizer lionw plans LionW's one moment: a plan is AdamW's less
// exactly 4 bytes a trained parameter (full and LoRA; a ZeRO-1 or ZeRO-3
// rank's, half its optimizer state), and equals what the benchmark's
// step allocates on a counting device.
func TestPlanLionW(t *testing.T) {
	c := smallConfig(t)
	const opt = engine.PartOptimizer
	for _, tc := range []struct {
		name string
		s    TrainSpec
	}{
		{"full", TrainSpec{}},
		{"lora", TrainSpec{LoRARank: 4}},
		{"zero1", TrainSpec{PlanRanks: 2, ShardOptimizer: true}},
		{"zero3", TrainSpec{PlanRanks: 2, ShardParameters: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plans := map[string]*PlanResult{}
			for _, name := range []string{"adamw", "lionw"} {
				s := tc.s
				s.Config, s.Seq, s.Batch, s.Precision, s.Threads, s.Optimizer = c, 32, 2, "fp32", 1, name
				plan, err := Plan(s, 1<<40)
				if err != nil {
					t.Fatal(err)
				}
				if plan.Optimizer != name || len(plan.Savings) > 0 {
					t.Fatalf("%s: plan of %q with savings %v", name, plan.Optimizer, plan.Savings)
				}
				if s.PlanRanks == 0 {
					if got := countedPeak(t, s); got != plan.PeakBytes {
						t.Errorf("%s: plan %d bytes, the step allocated %d", name, plan.PeakBytes, got)
					}
				}
				plans[name] = plan
			}
			adam, lion := plans["adamw"], plans["lionw"]
			moment := adam.Parts[opt] / 2
			if tc.s.PlanRanks == 0 {
				trained := c.NumParams()
				if tc.s.LoRARank > 0 {
					lc := *tc.s.options().LoRA
					var err error
					if trained, err = c.AdapterSize(lc); err != nil {
						t.Fatal(err)
					}
				}
				moment = 4 * trained
			}
			if lion.Parts[opt] != adam.Parts[opt]-moment || lion.PeakBytes != adam.PeakBytes-moment {
				t.Errorf("optimizer state %d bytes with lionw, %d with adamw; peak %d, %d: want one moment (%d bytes) less",
					lion.Parts[opt], adam.Parts[opt], lion.PeakBytes, adam.PeakBytes, moment)
			}
		})
	}
}

// countedPeak is the peak a counting device sees the benchmark's first
// step of s allocate (the optimizer allocates its state there), plus the
// attention scratch the device keeps itself.
func countedPeak(t *testing.T, s TrainSpec) int64 {
	t.Helper()
	cpu, err := engine.OpenDevice("cpu", engine.DeviceOptions{Threads: s.Threads})
	if err != nil {
		t.Fatal(err)
	}
	dev := engine.NewCountingDevice(cpu)
	ts, err := s.optimizer()
	if err != nil {
		t.Fatal(err)
	}
	opts := s.options()
	m := engine.New(s.Config, dev, opts)
	defer m.Close()
	m.InitRandom(s.Seed)
	step, err := s.stepper(m, ts, &TrainResult{})
	if err != nil {
		t.Fatal(err)
	}
	bt, err := randomBatch(s)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := step(bt, 1/float32(bt.Scored())); err != nil {
		t.Fatal(err)
	}
	c := s.Config
	return dev.Memory().Peak + engine.AttentionScratchFor(dev, opts.BF16, s.Batch, s.Seq, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
}
