package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"hone/engine"
)

func mergeCmd() *cobra.Command {
	var base, adapter, out string
	cmd := &cobra.Command{
		Use:   "merge --model BASE_DIR --adapter ADAPTER_DIR --out DIR",
		Short: "Merge a PEFT LoRA adapter into its base model, writing a full HF model directory",
		Long: `Writes W + scale·B·A for every adapted projection (computed in fp32), in the dtype of the base
checkpoint, with the base's config.json and tokenizer files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
			if err != nil {
				return err
			}
			if err := engine.MergeDirs(base, adapter, out, dev); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s merged into %s\n", out, adapter, base)
			return nil
		},
	}
	cmd.Flags().StringVar(&base, "model", "", "base HF model directory (required)")
	cmd.Flags().StringVar(&adapter, "adapter", "", "PEFT LoRA adapter directory (required)")
	cmd.Flags().StringVar(&out, "out", "", "output model directory (required)")
	for _, f := range []string{"model", "adapter", "out"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}
