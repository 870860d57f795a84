package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"hone/bench"
	"hone/engine"
)

// The scaling model's traffic (bench.StepTraffic) is what a real run's
// ranks hand the collective: `hone bench train --ranks N` counts each
// rank's calls and bytes over its last step (a collective.Counting around
// Gloo), and they must equal the model's, call for call and byte for byte.
func TestStepTrafficMatchesRanks(t *testing.T) {
	path := filepath.Join("..", "..", "bench", "configs", "llama-small.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := engine.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	const seq = 32
	for _, tc := range []struct {
		name      string
		ranks     int
		precision string
		sharding  string
		lora      int
		recompute bool
		every     int // residual checkpoints
	}{
		{"none fp32", 2, "fp32", bench.ShardNone, 0, false, 0},
		{"zero1 fp32", 2, "fp32", bench.ShardOptimizer, 0, false, 0},
		{"zero1 fp32 3 ranks", 3, "fp32", bench.ShardOptimizer, 0, false, 0},
		{"zero1 bf16 3 ranks", 3, "bf16", bench.ShardOptimizer, 0, false, 0},
		{"zero3 fp32", 2, "fp32", bench.ShardParameters, 0, true, 0},
		{"zero3 fp32 checkpoints", 2, "fp32", bench.ShardParameters, 0, true, 2},
		{"zero3 bf16 3 ranks", 3, "bf16", bench.ShardParameters, 0, false, 0},
		{"zero3 lora bf16", 2, "bf16", bench.ShardParameters, 4, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"train", "--config", path, "--seq", strconv.Itoa(seq), "--batch", strconv.Itoa(tc.ranks), "--steps", "1",
				"--precision", tc.precision, "--threads", "1", "--ranks", strconv.Itoa(tc.ranks), "--json"}
			switch tc.sharding {
			case bench.ShardNone:
				args = append(args, "--shard-optimizer=false")
			case bench.ShardParameters:
				args = append(args, "--shard-parameters")
			}
			if tc.lora > 0 {
				args = append(args, "--lora-rank", strconv.Itoa(tc.lora))
			}
			if tc.recompute {
				args = append(args, "--recompute")
			}
			if tc.every > 0 {
				args = append(args, "--checkpoint-every", strconv.Itoa(tc.every))
			}
			line := runBench(t, args...)
			var res bench.TrainResult
			if err := json.Unmarshal([]byte(line), &res); err != nil || res.StepCollective == nil {
				t.Fatalf("last line %q (%v): want a step_collective", line, err)
			}
			if res.CheckpointEvery != tc.every {
				t.Fatalf("ran with checkpoint_every %d, want %d", res.CheckpointEvery, tc.every)
			}
			o := engine.Options{BF16: tc.precision == "bf16", Recompute: res.Recompute, CompactBF16: res.CompactBF16, CheckpointEvery: res.CheckpointEvery}
			if tc.lora > 0 {
				o.LoRA = &engine.LoRAConfig{Rank: tc.lora}
			}
			rows := bench.RandomDistinctIDs(0, tc.ranks, 1, seq, cfg.VocabSize)
			want, err := bench.StepTraffic(cfg, o, tc.sharding, tc.ranks, 1, rows, false)
			if err != nil {
				t.Fatal(err)
			}
			if got := *res.StepCollective; got != want {
				t.Errorf("counted %+v\nmodel   %+v", got, want)
			}
			if want.AllGather.Bytes+want.ReduceScatter.Bytes+want.Broadcast.Bytes+want.AllReduce.Bytes == 0 {
				t.Error("the model predicts no traffic")
			}
		})
	}
}

// `hone bench scale --json` prints one case per ranks × bandwidth; a
// step's compute is the ranks' share of its model FLOPs at the rate, and
// the faster link takes a quarter of the slower's transfer time.
func TestBenchScale(t *testing.T) {
	cfg := filepath.Join("..", "..", "bench", "configs", "llama-3.1-8b.json")
	cmd := benchCmd()
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"scale", "--config", cfg, "--gflops", "300", "--ranks", "8", "--gbps", "25,100", "--latency-us", "0", "--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), out.String())
	}
	var rs [2]bench.ScaleResult
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &rs[i]); err != nil {
			t.Fatal(err)
		}
	}
	r := rs[0]
	if r.Ranks != 8 || r.Tokens != 64*8192 || r.Passes != 8 || math.Abs(r.ComputeS*8*300e9/r.ModelFLOPs-1) > 1e-9 {
		t.Errorf("ranks %d, tokens %d, passes %d, compute %g s for %g FLOPs", r.Ranks, r.Tokens, r.Passes, r.ComputeS, r.ModelFLOPs)
	}
	// Sharded parameters (the default): the gathers are prefetched, so at
	// 300 GFLOP/s only the pass's first gathers add to its compute.
	if math.Abs(rs[1].CommS*4/r.CommS-1) > 1e-9 || r.TodayS <= r.ComputeS || r.TodayS >= r.ComputeS+r.CommS/10 || !r.Fits {
		t.Errorf("comm %g s at 25 Gb/s, %g at 100; step %g s today (compute %g); fits %v", r.CommS, rs[1].CommS, r.TodayS, r.ComputeS, r.Fits)
	}
}
