package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"hone/engine"
)

// --plan with --ranks plans one rank: its share of the batch and, with
// sharded parameters, 1/N of the state; ranks_needed is the fewest ranks
// whose rank fits the memory given.
func TestPlanRanks(t *testing.T) {
	raw, err := os.ReadFile("configs/llama-400m.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := engine.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	const avail = 64 << 30
	plan := func(ranks int, shard bool, avail int64) *PlanResult {
		t.Helper()
		res, err := Plan(TrainSpec{Config: c, Seq: 256, Batch: 4, Precision: "fp32", PlanRanks: ranks, ShardParameters: shard}, avail)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	one, two, four := plan(1, false, avail), plan(2, true, avail), plan(4, true, avail)
	if two.Batch != 2 || two.Ranks != 2 || !two.ShardedParameters || four.Batch != 1 {
		t.Errorf("2 ranks: batch %d, ranks %d, sharded %v; 4 ranks: batch %d", two.Batch, two.Ranks, two.ShardedParameters, four.Batch)
	}
	P := c.NumParams()
	for _, p := range []struct {
		res *PlanResult
		n   int64
	}{{one, 1}, {two, 2}, {four, 4}} {
		// The moments are 8 bytes a parameter, divided by the ranks (rank
		// 0's shard is the largest, by at most a chunk a part).
		want, got := 8*P/p.n, p.res.Parts[engine.PartOptimizer]
		if got < want || got > want+8*int64(c.NumParts()) {
			t.Errorf("%d ranks: optimizer state %d bytes, want about %d", p.n, got, want)
		}
	}
	if r := float64(two.PeakBytes) / float64(one.PeakBytes); r > 0.6 {
		t.Errorf("2 sharded ranks plan %.2f of one process's peak, want ≤ 0.6", r)
	}
	if r := float64(four.PeakBytes) / float64(one.PeakBytes); r > 0.4 {
		t.Errorf("4 sharded ranks plan %.2f of one process's peak, want ≤ 0.4", r)
	}
	// A machine with room for the 4-rank plan but not for one process's
	// state needs more than one rank and at most 4: the fewest whose plan
	// fits (with Fit's savings), half as many not fitting.
	small := four.PeakBytes + 2<<30 + 1<<20 // MemoryBudget leaves 2 GiB
	need := plan(1, false, small).RanksNeeded
	if need < 2 || need > 4 || one.RanksNeeded != 1 {
		t.Fatalf("ranks needed: %d with room for the 4-rank plan, %d with 64 GiB; want 2 to 4, and 1", need, one.RanksNeeded)
	}
	if !plan(need, true, small).Fits || plan(need/2, need/2 > 1, small).Fits {
		t.Errorf("ranks needed %d: its plan does not fit, or half as many ranks fit too", need)
	}
	t.Logf("ranks needed: %d; refusal: %s", need, plan(1, false, small).Refusal)
	// The refusal names them, and how many more than a sharded plan has.
	if r := plan(1, false, small).Refusal; !strings.Contains(r, fmt.Sprintf("--ranks %d --shard-parameters (", need)) {
		t.Errorf("refusal %q does not name --ranks %d --shard-parameters", r, need)
	}
	if need > 2 {
		if r := plan(2, true, small).Refusal; !strings.Contains(r, fmt.Sprintf("--ranks %d --shard-parameters (%d more ranks; ", need, need-2)) {
			t.Errorf("2 sharded ranks' refusal %q does not name --ranks %d, %d more", r, need, need-2)
		}
	}
	// An NF4 base shards only its NF4 layers (its embeddings and head are
	// whole on every rank): where no number of ranks fits, none is named.
	nf4, err := Plan(TrainSpec{Config: c, Seq: 256, Batch: 4, Precision: "bf16", LoRARank: 8, QuantizeBase: "nf4"}, 2<<30+64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if nf4.Fits || nf4.RanksNeeded != 0 || strings.Contains(nf4.Refusal, "--ranks") {
		t.Errorf("NF4 base in 64 MiB: %v, fits %v, ranks needed %d, refusal %q; want refused without ranks", err, nf4.Fits, nf4.RanksNeeded, nf4.Refusal)
	}
}

// QLoRA on Llama-3.1-70B that one rank's memory cannot hold names the
// ranks whose shard of the NF4 layers fits, and their plan fits.
func TestPlanRanksNF4(t *testing.T) {
	raw, err := os.ReadFile("configs/llama-3.1-70b.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := engine.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	const avail = 26 << 30
	plan := func(ranks int) *PlanResult {
		t.Helper()
		res, err := Plan(TrainSpec{Config: c, Seq: 512, Batch: 8, Precision: "bf16", LoRARank: 16, QuantizeBase: "nf4",
			PlanRanks: ranks, ShardParameters: ranks > 1}, avail)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	one := plan(1)
	need := one.RanksNeeded
	t.Logf("one rank: %.1f GiB, ranks needed %d; refusal %s", float64(one.PeakBytes)/(1<<30), need, one.Refusal)
	if one.Fits || need < 2 || !strings.Contains(one.Refusal, fmt.Sprintf("--ranks %d --shard-parameters", need)) {
		t.Fatalf("one rank fits %v, ranks needed %d, refusal %q; want refused naming 2 or more sharded ranks", one.Fits, need, one.Refusal)
	}
	if !plan(need).Fits || need > 2 && plan(need/2).Fits {
		t.Errorf("ranks needed %d: its plan does not fit, or half as many fit too", need)
	}
}
