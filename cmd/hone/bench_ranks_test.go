package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/collective"
)

// Commands that start ranks re-run the executable, here the test binary:
// TestMain plays the rank (the arguments after "bench"). With envMain set
// it plays the whole command, main and its signal handling included, or
// ("stuck") a command whose work ignores its context.
func TestMain(m *testing.M) {
	switch os.Getenv(envMain) {
	case "":
	case "stuck": // a command whose work never looks at its context
		ctx := interruptible(context.Background(), os.Stderr)
		fmt.Fprintln(os.Stderr, "working")
		<-ctx.Done()
		select {}
	default:
		main()
		os.Exit(0)
	}
	if os.Getenv(collective.EnvRank) != "" && len(os.Args) > 2 && os.Args[1] == "bench" {
		cmd := benchCmd()
		cmd.SetArgs(os.Args[2:])
		if err := cmd.Execute(); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runBench(t *testing.T, args ...string) string {
	t.Helper()
	cmd := benchCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("hone bench %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	return lines[len(lines)-1]
}

// `hone bench collective --ranks 2 --json` runs two processes and prints
// the allreduce bandwidth.
func TestBenchCollective(t *testing.T) {
	line := runBench(t, "collective", "--ranks", "2", "--mb", "1", "--iters", "2", "--json")
	var res struct {
		Ranks int     `json:"ranks"`
		Bytes int64   `json:"bytes"`
		BusBW float64 `json:"busbw_gb_per_s"`
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil || res.Ranks != 2 || res.Bytes != 1<<20 || !(res.BusBW > 0) {
		t.Errorf("last line %q (%v), want ranks 2, bytes 1 MiB, busbw > 0", line, err)
	}
}

// `hone bench train --ranks 2` trains on two processes, the global batch
// split between them, and reports all ranks' tokens/s and the largest RSS.
func TestBenchTrainRanks(t *testing.T) {
	cfg := filepath.Join("..", "..", "bench", "configs", "llama-small.json")
	type result struct {
		Ranks   int       `json:"ranks"`
		Batch   int       `json:"batch"`
		Tokens  float64   `json:"tokens_per_s"`
		PeakRSS int64     `json:"peak_rss_bytes"`
		Losses  []float64 `json:"losses"`
		MFU     float64   `json:"mfu"`
		GFLOPs  float64   `json:"gflop_per_s"`
		Ceiling struct {
			GFLOPs float64   `json:"gflop_per_s"`
			Ranks  []float64 `json:"rank_gflop_per_s"`
			Thr    int       `json:"threads"`
		} `json:"ceiling"`
	}
	var runs [3]result
	for i, extra := range [][]string{{"--shard-optimizer=false"}, nil, {"--shard-parameters"}} {
		args := append([]string{"train", "--config", cfg, "--seq", "32", "--batch", "2", "--steps", "2", "--precision", "fp32",
			"--threads", "1", "--ranks", "2", "--ceiling-time", "1ms", "--json"}, extra...)
		line := runBench(t, args...)
		res := &runs[i]
		if err := json.Unmarshal([]byte(line), res); err != nil || res.Ranks != 2 || res.Batch != 2 || !(res.Tokens > 0) || res.PeakRSS <= 0 || len(res.Losses) != 2 {
			t.Errorf("%v: last line %q (%v), want ranks 2, batch 2, tokens_per_s > 0, peak_rss_bytes > 0, 2 losses", extra, line, err)
		}
		// MFU: all ranks' FLOPs over the sum of their 1-thread ceilings.
		c := res.Ceiling
		if len(c.Ranks) != 2 || c.Thr != 1 || math.Abs(c.GFLOPs-(c.Ranks[0]+c.Ranks[1])) > 1e-9*c.GFLOPs ||
			math.Abs(res.MFU-res.GFLOPs/c.GFLOPs) > 1e-9*res.MFU {
			t.Errorf("%v: mfu %g of %g GFLOP/s, ceiling %+v: want the GFLOP/s over the sum of two 1-thread ranks' ceilings", extra, res.MFU, res.GFLOPs, c)
		}
	}
	// The sharded optimizer (the default) and sharded parameters take the
	// same steps as plain data parallelism:
	// the losses after them agree.
	for k, what := range []string{"", "the optimizer", "the parameters"} {
		for i := range runs[0].Losses {
			if k == 0 || i >= len(runs[k].Losses) {
				continue
			}
			if a, b := runs[0].Losses[i], runs[k].Losses[i]; math.Abs(a-b) > 1e-6*math.Abs(a) {
				t.Errorf("loss %d: %v with %s sharded, %v without", i, b, what, a)
			}
		}
	}
}

// Over Gloo, three ranks with the sharded optimizer (the gradients
// reduce-scattered by the shim's ring, the updated weights all-gathered)
// take the steps of plain data parallelism (allreduced): the sums add the
// ranks' terms in another order, so the losses agree to rounding, fp32
// and bf16.
func TestBenchTrainThreeRanksZero1MatchesPlain(t *testing.T) {
	cfg := filepath.Join("..", "..", "bench", "configs", "llama-small.json")
	for _, precision := range []string{"fp32", "bf16"} {
		var losses [2][]float64
		for i, shard := range []string{"--shard-optimizer=false", "--shard-optimizer=true"} {
			line := runBench(t, "train", "--config", cfg, "--seq", "32", "--batch", "3", "--steps", "3", "--precision", precision,
				"--threads", "1", "--ranks", "3", "--ceiling-time", "1ms", "--json", shard)
			var res struct {
				Losses []float64 `json:"losses"`
			}
			if err := json.Unmarshal([]byte(line), &res); err != nil || len(res.Losses) != 3 {
				t.Fatalf("%s %s: last line %q (%v), want 3 losses", precision, shard, line, err)
			}
			losses[i] = res.Losses
		}
		for i, a := range losses[0] {
			if b := losses[1][i]; math.Abs(a-b) > 1e-6*math.Abs(a) {
				t.Errorf("%s: loss %d: %v with the optimizer sharded over 3 ranks, %v without", precision, i, b, a)
			}
		}
	}
}
