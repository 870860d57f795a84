package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/bench"
	"hone/engine"
)

// `hone bench train --optimizer lionw` trains LionW and says so in its
// JSON: over 2 ranks, plain, with the optimizer sharded (ZeRO-1) and with
// the parameters sharded (ZeRO-3), it takes the same steps, which are not
// AdamW's. A sign update does not see the rounding of the clipping norm,
// which the shardings sum in another order, so the losses agree to 1e-9
// (measured: bit for bit); AdamW's update at LionW's rate moves them by
// 7e-9.
func TestBenchTrainLionW(t *testing.T) {
	cfg := filepath.Join("..", "..", "bench", "configs", "llama-small.json")
	run := func(optimizer string, extra ...string) bench.TrainResult {
		t.Helper()
		args := append([]string{"train", "--config", cfg, "--seq", "32", "--batch", "2", "--steps", "2", "--precision", "fp32",
			"--threads", "1", "--ranks", "2", "--ceiling-time", "1ms", "--json", "--optimizer", optimizer}, extra...)
		line := runBench(t, args...)
		var res bench.TrainResult
		if err := json.Unmarshal([]byte(line), &res); err != nil || res.Optimizer != optimizer || len(res.Losses) != 2 {
			t.Fatalf("%s %v: last line %q (%v), want optimizer %q and 2 losses", optimizer, extra, line, err, optimizer)
		}
		return res
	}
	plain := run("lionw", "--shard-optimizer=false")
	for _, extra := range []string{"--shard-optimizer", "--shard-parameters"} {
		res := run("lionw", extra)
		for i, a := range plain.Losses {
			if b := res.Losses[i]; math.Abs(a-b) > 1e-9*math.Abs(a) {
				t.Errorf("%s: loss %d: %v, %v without sharding", extra, i, b, a)
			}
		}
	}
	if adam := run("adamw", "--shard-optimizer=false"); adam.Losses[1] == plain.Losses[1] {
		t.Errorf("adamw and lionw: the same loss %v", adam.Losses[1])
	}
}

// An unknown --optimizer is refused, naming the flag and the optimizers.
func TestBenchTrainUnknownOptimizer(t *testing.T) {
	for _, args := range [][]string{nil, {"--plan"}} {
		cmd := benchCmd()
		cmd.SetOut(&strings.Builder{})
		cmd.SetErr(&strings.Builder{})
		cmd.SetArgs(append([]string{"train", "--config", filepath.Join("..", "..", "bench", "configs", "llama-small.json"), "--optimizer", "sgd"}, args...))
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), `--optimizer "sgd": want adamw or lionw`) {
			t.Errorf("%v: %v, want a refusal naming --optimizer and adamw or lionw", args, err)
		}
	}
}

// `hone bench scale --optimizer lionw` plans a rank with LionW's one
// moment: its peak is AdamW's less half AdamW's optimizer state.
func TestBenchScaleLionW(t *testing.T) {
	path := filepath.Join("..", "..", "bench", "configs", "llama-3.1-8b.json")
	peak := map[string]int64{}
	for _, optimizer := range []string{"adamw", "lionw"} {
		cmd := benchCmd()
		var out strings.Builder
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"scale", "--config", path, "--gflops", "300", "--ranks", "8", "--gbps", "100", "--memory", "1TiB", "--optimizer", optimizer, "--json"})
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		var r bench.ScaleResult
		if err := json.Unmarshal([]byte(strings.TrimSpace(out.String())), &r); err != nil || r.Optimizer != optimizer || len(r.Savings) > 0 {
			t.Fatalf("%s: %q (%v), want one case of %s without savings", optimizer, out.String(), err, optimizer)
		}
		peak[optimizer] = r.PeakBytes
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := engine.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	adam, err := bench.Plan(bench.TrainSpec{Config: cfg, Seq: 8192, Batch: 8, Precision: "bf16", ShardParameters: true, PlanRanks: 8}, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	if moment := adam.Parts["optimizer_state"] / 2; peak["adamw"] != adam.PeakBytes || peak["lionw"] != adam.PeakBytes-moment {
		t.Errorf("rank's peak %d bytes with lionw, %d with adamw (plan %d): want one moment, %d bytes, less", peak["lionw"], peak["adamw"], adam.PeakBytes, moment)
	}
}
