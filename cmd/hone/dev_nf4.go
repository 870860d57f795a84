package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"hone/engine"
	"hone/safetensors"
)

// quantFlags are the flags of a quantized frozen base (QLoRA).
type quantFlags struct {
	base        string
	singleScale bool
	embeddings  bool
}

func (q *quantFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&q.base, "quantize-base", "", `hold the frozen base in this format: "nf4" (QLoRA's 4-bit NormalFloat, blocks of 64)`)
	cmd.Flags().BoolVar(&q.singleScale, "nf4-single-scale", false, "keep NF4's block scales in fp32 instead of double-quantizing them to 8 bits")
	cmd.Flags().BoolVar(&q.embeddings, "nf4-embeddings", false, "hold the embeddings and output head in NF4 too (QLoRA keeps them unquantized)")
}

func (q *quantFlags) options() engine.Options {
	return engine.Options{QuantizeBase: q.base, NF4SingleScale: q.singleScale, NF4Embeddings: q.embeddings}
}

func devDequantizeCmd() *cobra.Command {
	var modelDir, out string
	var q quantFlags
	cmd := &cobra.Command{
		Use:   "dequantize --model DIR --quantize-base nf4 --out DIR",
		Short: "Write a model's base weights as a quantized base computes with them (fp32), for the reference",
		Long: `Loads the model with its base quantized as hone dev grad --quantize-base does, and writes the
dequantized weights (f32 safetensors) with its config.json into --out, so that the float64 reference
(tools/reference/qlora_reference.py) runs on exactly the values hone computes with.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.base == "" {
				return fmt.Errorf("--quantize-base is required (nf4)")
			}
			dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
			if err != nil {
				return err
			}
			m, err := engine.Load(modelDir, dev, q.options())
			if err != nil {
				return err
			}
			defer m.Close()
			tensors, err := m.DequantizedTensors()
			if err != nil {
				return err
			}
			raw, err := os.ReadFile(filepath.Join(modelDir, "config.json"))
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			if err := engine.WriteFileAtomic(filepath.Join(out, "config.json"), raw); err != nil {
				return err
			}
			path := filepath.Join(out, "model.safetensors")
			if err := safetensors.WriteFile(path, tensors, safetensors.F32, nil); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d tensors, %s base of %d bytes dequantized to f32\n", out, len(tensors), q.base, m.NF4Bytes())
			return nil
		},
	}
	cmd.Flags().StringVar(&modelDir, "model", "", "HF model directory (required)")
	cmd.Flags().StringVar(&out, "out", "", "output model directory (required)")
	q.register(cmd)
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("out")
	return cmd
}
