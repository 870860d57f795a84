package engine_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"hone/engine"
)

// RanksNeeded is the fewest ranks whose rank fits with sharded parameters:
// full fine-tuning of a 400M model in fp32 (16 bytes a parameter) in
// memory sized for its state over 3 ranks is refused on one and on 2
// ranks and fits on 3; ranks the caller cannot run (rows 0) are skipped,
// and the search starts where asked.
func TestRanksNeeded(t *testing.T) {
	raw, err := os.ReadFile("../bench/configs/llama-400m.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := engine.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	dev := linearScratch{openCPU(t)}
	const T = 64
	over := func(n int) engine.Options { return engine.Options{ShardRanks: n} }
	// The plan with every saving Fit can turn on (nothing fits 1 byte).
	avail := int64(2<<30) + c.FittedMemory(dev, over(3), 1, T, 1) + 1 // the budget keeps 2 GiB
	one := func(int) int { return 1 }
	n, need := c.RanksNeeded(dev, engine.Options{}, T, avail, 1, one)
	if n != 3 || need > engine.MemoryBudget(avail) {
		t.Errorf("RanksNeeded = %d ranks (%d bytes, budget %d), want 3", n, need, engine.MemoryBudget(avail))
	}
	for _, k := range []int{0, 2} {
		_, _, err := c.Fit(dev, over(k), 1, T, avail)
		var fe *engine.FitError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), "not enough memory") {
			t.Errorf("Fit over %d ranks = %v, want a FitError", k, err)
		}
	}
	if _, _, err := c.Fit(dev, over(3), 1, T, avail); err != nil {
		t.Errorf("Fit over 3 ranks: %v", err)
	}
	if n, _ := c.RanksNeeded(dev, engine.Options{}, T, avail, 1, func(n int) int { return map[bool]int{true: 0, false: 1}[n == 3] }); n != 4 {
		t.Errorf("RanksNeeded without 3 = %d, want 4", n)
	}
	if n, _ := c.RanksNeeded(dev, engine.Options{}, T, avail, 5, one); n != 5 {
		t.Errorf("RanksNeeded from 5 = %d, want 5", n)
	}
	if n, _ := c.RanksNeeded(dev, engine.Options{}, T, 2<<30+1<<20, 1, one); n != 0 {
		t.Errorf("RanksNeeded with 1 MiB usable = %d, want 0 (not even a rank's activations fit)", n)
	}
}

// A sharded LoRA base in bf16 is planned as New builds it: converted part
// by part from the rank's fp32 shards, never held whole in bf16.
func TestShardedFrozenBF16Plan(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	dev := openCPU(t)
	lc := &engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: engine.LoRATargets}
	frozen := engine.Options{ShardRanks: 4, LoRA: lc, BF16: true, FrozenBF16: true}
	built := engine.Options{ShardRanks: 4, LoRA: lc, BF16: true, CompactBF16: true}
	if a, b := c.MemoryEstimate(dev, frozen, 2, 64), c.MemoryEstimate(dev, built, 2, 64); a != b {
		t.Errorf("plan with FrozenBF16 %d bytes, as New builds it %d", a, b)
	}
}
