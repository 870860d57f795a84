package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"hone/bench"
	"hone/engine"
	"hone/settings"
)

func benchScaleCmd() *cobra.Command {
	var configPath, precision, optimizer, sharding string
	var loraRank, seq, rows, micro, embedRows int
	var ranks []int
	var gbps []float64
	var gflops, mfu, latencyUS float64
	var memory byteSize = 256 << 30
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "scale --config CONFIG.json [--lora-rank R] [--optimizer adamw|lionw] --sharding parameters|optimizer|none --ranks 8,64 --gbps 25,100 --seq N --rows N [--gflops G] [--json]",
		Short: "Model one optimizer step on N machines: compute, collective traffic and time, memory per rank",
		Long: `Computes, for each --ranks and --gbps, one optimizer step's model FLOPs and compute time at --gflops
model FLOP/s per machine, the bytes each rank hands the collective (counted from what hone's ZeRO-1,
ZeRO-3 and LoRA code calls) and sends on the wire (Gloo's algorithms), the communication time, the
step time serial (compute + communication), overlapped (their max) and as hone overlaps today, and
one rank's memory plan. Without --gflops the rate is this machine's matmul ceiling (measured now)
times --mfu. README "Scaling model" states the assumptions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := os.ReadFile(configPath)
			if err != nil {
				return err
			}
			cfg, err := engine.ParseConfig(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", configPath, err)
			}
			if gflops <= 0 {
				dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
				if err != nil {
					return err
				}
				c, err := bench.MeasureCeiling(cmd.Context(), dev, bench.CeilingSpec{Precisions: []string{precision}})
				if err != nil {
					return err
				}
				gflops = mfu * c.FP32
				if precision == "bf16" {
					gflops = mfu * c.BF16
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "rate: %.0f GFLOP/s (measured %s ceiling × mfu %.2f)\n", gflops, precision, mfu)
			}
			var out []*bench.ScaleResult
			for _, n := range ranks {
				for _, g := range gbps {
					r, err := bench.Scale(bench.ScaleSpec{Config: cfg, Precision: precision, LoRARank: loraRank, Optimizer: optimizer, Sharding: sharding, Ranks: n,
						GbitPerS: g, Latency: latencyUS * 1e-6, Seq: seq, GlobalRows: rows, MicroRows: micro, GFLOPs: gflops,
						MemoryBytes: int64(memory), EmbedRows: embedRows})
					if err != nil {
						return err
					}
					out = append(out, r)
				}
			}
			if asJSON {
				for _, r := range out {
					b, _ := json.Marshal(r)
					fmt.Fprintln(cmd.OutOrStdout(), string(b))
				}
				return nil
			}
			writeScale(cmd.OutOrStdout(), out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "HF config.json (required)")
	f.StringVar(&precision, "precision", "bf16", "bf16 or fp32")
	f.IntVar(&loraRank, "lora-rank", 0, "train a LoRA adapter of this rank (every layer, the default targets) instead of the whole model")
	f.StringVar(&optimizer, "optimizer", settings.Optimizer, "adamw or lionw: the optimizer state a rank's memory plan counts (LionW's one moment, AdamW's two)")
	f.StringVar(&sharding, "sharding", bench.ShardParameters, "parameters (ZeRO-3, --shard-parameters), optimizer (ZeRO-1, --shard-optimizer) or none")
	f.IntSliceVar(&ranks, "ranks", []int{8, 64}, "machines (one rank each)")
	f.Float64SliceVar(&gbps, "gbps", []float64{25, 100}, "link bandwidth per machine, Gbit/s each way")
	f.IntVar(&seq, "seq", 8192, "tokens per row")
	f.IntVar(&rows, "rows", 64, "rows per optimizer step over all ranks")
	f.IntVar(&micro, "micro-rows", 1, "rows per micro-batch (pass) on a rank")
	f.Float64Var(&gflops, "gflops", 0, "one machine's training rate in model FLOP/s ÷ 1e9 (as bench train's gflop_per_s); 0: this machine's ceiling × --mfu")
	f.Float64Var(&mfu, "mfu", 0.8, "with --gflops 0: the fraction of the measured ceiling a step reaches")
	f.Float64Var(&latencyUS, "latency-us", 25, "latency of one algorithm step's message, µs")
	f.Var(&memory, "memory", "each machine's memory the plan fits into")
	f.IntVar(&embedRows, "embed-rows", 0, "distinct token ids per step (the embedding rows an unsharded reduction moves); 0: the vocabulary")
	f.BoolVar(&asJSON, "json", false, "print one JSON object per case")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// writeScale prints the cases as a table.
func writeScale(w interface{ Write([]byte) (int, error) }, rs []*bench.ScaleResult) {
	if len(rs) == 0 {
		return
	}
	r0 := rs[0]
	method := r0.Method
	if r0.LoRARank > 0 {
		method = fmt.Sprintf("LoRA r%d", r0.LoRARank)
	}
	fmt.Fprintf(w, "%s (%d params), %s %s %s, sharding %s, seq %d × %d rows a step (%d-row passes), %.0f GFLOP/s per machine, %.0f µs a message\n",
		r0.Model, r0.Params, method, r0.Optimizer, r0.Precision, r0.Sharding, r0.Seq, r0.Rows, r0.MicroRows, r0.GFLOPs, r0.LatencyUS)
	fmt.Fprintf(w, "%6s %6s %11s %10s %10s %10s %10s %10s %8s %9s %s\n", "ranks", "Gb/s", "compute s", "sent GB", "comm s", "serial s", "overlap s", "today s", "comm %", "mem GiB", "fits")
	for _, r := range rs {
		fits := "yes"
		if !r.Fits {
			fits = "no"
		}
		if len(r.Savings) > 0 {
			fits += " (" + strings.Join(r.Savings, ", ") + ")"
		}
		fmt.Fprintf(w, "%6d %6.0f %11.1f %10.2f %10.1f %10.1f %10.1f %10.1f %7.0f%% %9.1f %s\n", r.Ranks, r.GbitPerS, r.ComputeS, r.SentBytes/1e9,
			r.CommS, r.SerialS, r.OverlapS, r.TodayS, 100*r.CommShare, float64(r.PeakBytes)/(1<<30), fits)
	}
}
