package bench

import (
	"os"
	"testing"

	"hone/engine"
)

// A LoRA base sharded over more ranks holds less per rank: the plan
// counts the fp32 shards New builds, not a whole bf16 base.
func TestPlanShardedLoRABaseShrinksWithRanks(t *testing.T) {
	raw, err := os.ReadFile("configs/llama-small.json")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := engine.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	weights := func(ranks int) int64 {
		p, err := Plan(TrainSpec{Config: cfg, Seq: 32, Batch: ranks, Precision: "bf16", LoRARank: 4, ShardParameters: true, PlanRanks: ranks}, 64<<30)
		if err != nil {
			t.Fatal(err)
		}
		return p.Parts[engine.PartWeights]
	}
	if w2, w4 := weights(2), weights(4); w4 >= w2 {
		t.Errorf("weights per rank: %d bytes over 4 ranks, %d over 2: want fewer over 4", w4, w2)
	}
}
