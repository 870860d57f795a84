package bench

import (
	"math"
	"os"
	"testing"

	"hone/collective"
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

// WireTime's formulas on hand-computed cases: 4 ranks on 8 Gbit/s links
// (1e9 bytes/s), 1e9 bytes of each operation in one call, 10 µs a step.
func TestWireTime(t *testing.T) {
	one := collective.OpTraffic{Calls: 1, Bytes: 1e9}
	for _, tc := range []struct {
		name       string
		tr         collective.Traffic
		sent, secs float64
	}{
		// ring: 2·3/4 of the buffer out, 2·3 steps
		{"allreduce", collective.Traffic{AllReduce: one}, 1.5e9, 1.5 + 6e-5},
		{"allgather", collective.Traffic{AllGather: one}, 0.75e9, 0.75 + 3e-5},
		{"reduce-scatter", collective.Traffic{ReduceScatter: one}, 0.75e9, 0.75 + 3e-5},
		// binomial tree: 2 rounds of the whole buffer; 3 of 4 ranks receive it once
		{"broadcast", collective.Traffic{Broadcast: one}, 0.75e9, 2 + 2e-5},
	} {
		sent, secs := WireTime(tc.tr, 4, 8, 10e-6)
		if math.Abs(sent-tc.sent) > 1 || math.Abs(secs-tc.secs) > 1e-9 {
			t.Errorf("%s: sent %g bytes in %g s, want %g in %g", tc.name, sent, secs, tc.sent, tc.secs)
		}
	}
}

// ZeRO-3's gathers and reduce-scatters per pass, counted by hand for
// llama-small over 2 ranks: every part is even, so no padding; a pass
// gathers the embeddings and head once and each layer twice, and
// reduce-scatters every part once.
func TestStepTrafficShardedByHand(t *testing.T) {
	c := smallConfig(t)
	V, C, F, KV, L := 8000, 256, 704, 64, 4
	embed, head := V*C, C+V*C
	layer := 2*C + C*C + 2*C*KV + C*C + 3*C*F
	tr, err := StepTraffic(c, engine.Options{}, ShardParameters, 2, 3, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	wantAG := int64(3 * 4 * (embed + head + 2*L*layer))
	wantRS := int64(3 * 4 * (embed + head + L*layer))
	if tr.AllGather.Bytes != wantAG || tr.AllGather.Calls != int64(3*(2+2*L)) || tr.ReduceScatter.Bytes != wantRS {
		t.Errorf("3 passes: allgather %+v, reduce-scatter %+v; want %d and %d bytes", tr.AllGather, tr.ReduceScatter, wantAG, wantRS)
	}
	if tr.AllReduce != (collective.OpTraffic{Calls: 3, Bytes: 4 * (6 + 2 + 2)}) {
		t.Errorf("allreduce %+v: want the counts, the loss and the norm", tr.AllReduce)
	}
}

// The scaling model's ZeRO-1 rank holds the untied embeddings' moments
// and 1/N of the rest's (8 bytes a parameter), as its plan says: on an
// 8B model at 8 ranks, where a product of bytes and parameters overflows
// int64.
func TestScaleZero1RankMoments(t *testing.T) {
	raw, err := os.ReadFile("configs/llama-3.1-8b.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := engine.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	spec := ScaleSpec{Config: c, Ranks: n, Seq: 8192, GlobalRows: 64, MicroRows: 1, Precision: "bf16", GFLOPs: 235, GbitPerS: 25,
		Sharding: ShardOptimizer, MemoryBytes: 256 << 30}
	res, err := Scale(spec)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := Plan(TrainSpec{Config: c, Seq: 8192, Batch: n, Precision: "bf16", ShardOptimizer: true, PlanRanks: n}, 256<<30)
	if err != nil {
		t.Fatal(err)
	}
	front := int64(c.VocabSize * c.HiddenSize)
	want, got := 8*(front+(c.NumParams()-front)/n), plan.Parts[engine.PartOptimizer]
	if !plan.ShardedOptimizer || got < want || got > want+1<<20 || res.PeakBytes != plan.PeakBytes {
		t.Errorf("moments %d bytes, want %d; scale's rank %d bytes, plan %d (sharded optimizer %v)", got, want, res.PeakBytes, plan.PeakBytes, plan.ShardedOptimizer)
	}
}
