package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"hone/bench"
)

// printPlan prints `hone bench train --plan`: the memory plan part by part,
// or one JSON object as the last line, planned against avail bytes (0:
// the memory this machine has available).
func printPlan(w io.Writer, s bench.TrainSpec, avail int64, asJSON bool) error {
	res, err := bench.Plan(s, avail)
	if err != nil {
		return err
	}
	if asJSON {
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, string(b))
		return nil
	}
	fmt.Fprintf(w, "%s %s %s, seq %d × batch %d, recompute %v", res.Method, res.Optimizer, res.Precision, res.Seq, res.Batch, res.Recompute)
	if res.KeepAttention {
		fmt.Fprint(w, " keeping the attention outputs")
		if k := res.KeepAttentionLayers; k == 1 {
			fmt.Fprint(w, " of 1 layer")
		} else if k > 1 {
			fmt.Fprintf(w, " of %d layers", k)
		}
	}
	if res.CheckpointEvery > 1 {
		fmt.Fprintf(w, ", residual checkpoints (segments of at most %d layers)", res.CheckpointEvery)
	}
	fmt.Fprintf(w, ": peak %.2f GiB\n", gibs(res.PeakBytes))
	for _, k := range slices.Sorted(maps.Keys(res.Parts)) {
		fmt.Fprintf(w, "  %-18s %10.3f GiB\n", k, gibs(res.Parts[k]))
	}
	for _, n := range res.Notes {
		fmt.Fprintln(w, n)
	}
	switch {
	case res.Refusal != "":
		fmt.Fprintln(w, res.Refusal)
	case len(res.Savings) > 0:
		fmt.Fprintf(w, "fits in %.1f GiB available with %s (%.2f GiB without)\n", gibs(res.AvailableBytes), strings.Join(res.Savings, ", "), gibs(res.AskedBytes))
	default:
		fmt.Fprintf(w, "fits in %.1f GiB available\n", gibs(res.AvailableBytes))
	}
	fmt.Fprintf(w, "longest row that fits at %d rows per micro-batch: %d tokens\n", res.Batch, res.LongestSeq)
	if res.Ranks > 1 {
		fmt.Fprintf(w, "planned for one of %d ranks (parameters sharded: %v)\n", res.Ranks, res.ShardedParameters)
	}
	if res.RanksNeeded > 0 {
		fmt.Fprintf(w, "ranks needed with sharded parameters (--shard-parameters): %d\n", res.RanksNeeded)
	}
	return nil
}

func gibs(b int64) float64 { return float64(b) / (1 << 30) }
