package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"hone/bench"
	"hone/engine"
)

func benchCeilingCmd() *cobra.Command {
	var threads, size, reps int
	var minTime time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ceiling [--json]",
		Short: "Measure the machine's bf16 and fp32 matrix-product throughput with the device's own matmul",
		Long: `Times large square products c = a·bᵀ through the training device's matmul (oneDNN on the CPU),
one at a time for at least --min-time per precision after an untimed one; the fastest counts. It is
the ceiling that hone bench train's "mfu" is measured against (there timed in the same process, on
the step's threads, before and after the steps).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: threads})
			if err != nil {
				return err
			}
			c, err := bench.MeasureCeiling(cmd.Context(), dev, bench.CeilingSpec{Size: size, MinTime: minTime, MinProducts: reps, Peak: true})
			if err != nil {
				return err
			}
			if asJSON {
				b, _ := json.Marshal(c)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d×%d×%d products, %d threads: bf16 %.0f GFLOP/s (best of %d), fp32 %.0f GFLOP/s (best of %d) (%s)\n",
				size, size, size, c.Threads, c.BF16, c.BF16Products, c.FP32, c.FP32Products, c.ISA)
			if c.PeakBF16 > 0 || c.PeakFP32 > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "vector peak, operands in registers: bf16 %.0f GFLOP/s, fp32 %.0f GFLOP/s\n", c.PeakBF16, c.PeakFP32)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&threads, "threads", 0, "threads (0 = all cores)")
	f.IntVar(&size, "size", bench.CeilingSize, "side of the square products")
	f.DurationVar(&minTime, "min-time", bench.CeilingTime, "time products for at least this long per precision")
	f.IntVar(&reps, "reps", 3, "and time at least this many products per precision")
	f.BoolVar(&asJSON, "json", false, "print one JSON object as the last stdout line")
	return cmd
}
