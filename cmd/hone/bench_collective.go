package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"hone/bench"
	"hone/collective"
	"hone/collective/gloo"
)

func benchCollectiveCmd() *cobra.Command {
	var ranks, iters int
	var mb float64
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "collective --ranks R --mb M [--iters N] [--json]",
		Short: "Measure allreduce bandwidth of R local ranks (separate processes) over Gloo's TCP transport",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if cfg, isRank, err := collective.ConfigFromEnv(); isRank {
				if err != nil {
					return err
				}
				res, err := bench.CollectiveRank(ctx, cfg, mb, iters)
				if err != nil {
					return err
				}
				if cfg.Rank == 0 {
					b, _ := json.Marshal(res)
					fmt.Fprintln(cmd.OutOrStdout(), string(b))
				}
				return nil
			}
			if ranks < 2 {
				return fmt.Errorf("--ranks %d: need at least 2", ranks)
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			args := []string{"bench", "collective", "--mb", fmt.Sprint(mb), "--iters", fmt.Sprint(iters)}
			outs, err := collective.Launch(ctx, exe, args, nil, ranks, 0, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			line := lastLineOf(outs[0].Stdout)
			var res bench.CollectiveResult
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				return fmt.Errorf("rank 0's result %q: %w", line, err)
			}
			if asJSON {
				fmt.Fprintln(cmd.OutOrStdout(), line)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s allreduce, %d ranks, %.1f MiB: %.2f ms/op, algbw %.2f GB/s, busbw %.2f GB/s\n",
				res.Backend, res.Ranks, float64(res.Bytes)/(1<<20), res.SecondsPerOp*1e3, res.AlgBWGBps, res.BusBWGBps)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&ranks, "ranks", 2, "local ranks (processes)")
	f.Float64Var(&mb, "mb", 64, "MiB of float32 per allreduce")
	f.IntVar(&iters, "iters", 10, "timed allreduces (after two warm-ups); the median is reported")
	f.BoolVar(&asJSON, "json", false, "print one JSON object as the last stdout line")
	return cmd
}

func lastLineOf(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// benchTrainRanks handles `bench train --ranks R`: in the launching
// process it starts R ranks, prints their merged result and reports done;
// in a rank it joins the group (s.Coll) and lets the benchmark run.
func benchTrainRanks(cmd *cobra.Command, s *bench.TrainSpec, ranks int, asJSON bool) (bool, error) {
	ctx := cmd.Context()
	if cfg, isRank, err := collective.ConfigFromEnv(); isRank {
		if err != nil {
			return true, err
		}
		g, err := gloo.New(ctx, cfg)
		if err != nil {
			return true, err
		}
		s.Coll = g
		return false, nil
	}
	if ranks <= 1 {
		return false, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return true, err
	}
	// The ranks get this command's flags, less --ranks, plus --json.
	args := []string{"bench", "train", "--json"}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Name == "ranks" || f.Name == "json" {
			return
		}
		v := f.Value.String()
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			v = strings.Join(sv.GetSlice(), ",")
		}
		args = append(args, "--"+f.Name+"="+v)
	})
	outs, err := collective.Launch(ctx, exe, args, nil, ranks, 0, cmd.ErrOrStderr())
	if err != nil {
		return true, err
	}
	results := make([]*bench.TrainResult, len(outs))
	for i, o := range outs {
		line := lastLineOf(o.Stdout)
		if err := json.Unmarshal([]byte(line), &results[i]); err != nil {
			return true, fmt.Errorf("rank %d's result %q: %w", i, line, err)
		}
	}
	res := bench.MergeRanks(results)
	if asJSON {
		b, _ := json.Marshal(res)
		fmt.Fprintln(cmd.OutOrStdout(), string(b))
		return true, nil
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s, %d ranks × %d threads, seq %d × global batch %d: %.1f tokens/s (all ranks), %.0f GFLOP/s (MFU %.2f of the ranks' %.0f), peak RSS %.2f GiB (largest rank)\n",
		res.Method, res.Optimizer, res.Precision, res.Ranks, res.Threads, res.Seq, res.Batch, res.TokensPerS, res.GFLOPs, res.MFU, res.CeilingGFLOPs, float64(res.PeakRSSBytes)/(1<<30))
	return true, nil
}
