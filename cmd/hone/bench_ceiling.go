package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"hone/bench"
	"hone/engine"
)

func benchCeilingCmd() *cobra.Command {
	var threads, size, reps int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ceiling [--json]",
		Short: "Measure the machine's bf16 and fp32 matrix-product throughput with the device's own matmul",
		Long: `Times large square products c = a·bᵀ through the training device's matmul (oneDNN on the CPU),
best of --reps after a warm-up: the ceiling that hone bench train's "mfu" is measured against.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: threads})
			if err != nil {
				return err
			}
			c, err := bench.MeasureCeiling(cmd.Context(), dev, size, reps)
			if err != nil {
				return err
			}
			if asJSON {
				b, _ := json.Marshal(c)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d×%d×%d products: bf16 %.0f GFLOP/s, fp32 %.0f GFLOP/s (%s)\n", size, size, size, c.BF16, c.FP32, c.ISA)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&threads, "threads", 0, "threads (0 = all cores)")
	f.IntVar(&size, "size", bench.CeilingSize, "side of the square products")
	f.IntVar(&reps, "reps", 5, "timed products per precision (the best counts)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object as the last stdout line")
	return cmd
}
