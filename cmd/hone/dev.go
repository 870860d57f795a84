package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"hone/engine"
	"hone/safetensors"
)

func devCmd() *cobra.Command {
	dev := &cobra.Command{Use: "dev", Short: "Developer tools: random models and gradient dumps"}
	dev.AddCommand(devInitCmd(), devGradCmd(), devDequantizeCmd())
	return dev
}

func devInitCmd() *cobra.Command {
	var configPath, out string
	var seed uint64
	cmd := &cobra.Command{
		Use:   "init --config CONFIG.json --out DIR [--seed N]",
		Short: "Write a randomly initialised model directory in Hugging Face layout",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := os.ReadFile(configPath)
			if err != nil {
				return err
			}
			c, err := engine.ParseConfig(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", configPath, err)
			}
			dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
			if err != nil {
				return err
			}
			m := engine.New(c, dev, engine.Options{})
			m.InitRandom(seed)
			// Keep the user's config.json verbatim, tokenizer files beside it too.
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			if err := engine.WriteFileAtomic(filepath.Join(out, "config.json"), raw); err != nil {
				return err
			}
			dtype := safetensors.F32
			if c.TorchDtype == "bfloat16" {
				dtype = safetensors.BF16
			}
			if err := m.Save(out, engine.SaveOptions{DType: dtype, SourceDir: out}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d parameters (%s)\n", out, c.NumParams(), dtype)
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "HF config.json of a LlamaForCausalLM or MistralForCausalLM (required)")
	cmd.Flags().StringVar(&out, "out", "", "output model directory (required)")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed")
	cmd.MarkFlagRequired("config")
	cmd.MarkFlagRequired("out")
	return cmd
}

func devGradCmd() *cobra.Command {
	var modelDir, adapterDir, batchPath, out string
	var q quantFlags
	cmd := &cobra.Command{
		Use:   "grad --model DIR [--adapter ADAPTER_DIR [--quantize-base nf4]] --batch BATCH.json --out GRADS.safetensors",
		Short: "Compute the loss and every parameter's gradient for one batch",
		Long: `Reads {"input_ids": [[...]], "labels": [[...]], "segment_ids": [[...]]} (segment_ids optional;
labels have the shape of input_ids, the logits at position t are scored against labels[t+1], -100 is
ignored) and writes f32 tensors: "loss" (a scalar, the mean over scored tokens) and each parameter's
gradient under its Hugging Face name. With --adapter (a PEFT LoRA directory) the base weights are
frozen and the file holds the loss and the gradient of every adapter tensor under its PEFT name
(fp32, no dropout). With --quantize-base nf4 the frozen base is held in NF4 (QLoRA) and computed
with in fp32 on its dequantized values, which hone dev dequantize writes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
			if err != nil {
				return err
			}
			if q.base != "" && adapterDir == "" {
				return fmt.Errorf("--quantize-base %s: the base is frozen; give --adapter for the gradients of an adapter", q.base)
			}
			m, err := engine.Load(modelDir, dev, q.options())
			if err != nil {
				return err
			}
			specs, arena := m.Config.ParamSpecs(), m.Grads.Arena
			if adapterDir != "" {
				a, err := engine.LoadAdapter(adapterDir, m)
				if err != nil {
					return err
				}
				if err := m.Attach(a); err != nil {
					return err
				}
				a.ZeroGrad()
				specs, arena = a.Specs, a.Grads
			}
			bt, err := readGradBatch(batchPath, m)
			if err != nil {
				return err
			}
			n := bt.Scored()
			m.ZeroGrad()
			sum, _ := m.ForwardBackward(bt, 1/float32(n))
			tensors := []safetensors.Tensor{{Name: "loss", Shape: []int{}, Data: []float32{float32(sum / float64(n))}}}
			grads := engine.HostView(m.Dev, arena)
			for _, s := range specs {
				tensors = append(tensors, safetensors.Tensor{Name: s.Name, Shape: s.Shape, Data: grads[s.Offset : s.Offset+s.Size()]})
			}
			if err := safetensors.WriteFile(out, tensors, safetensors.F32, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "loss %.6f over %d tokens; wrote %s\n", sum/float64(n), n, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&modelDir, "model", "", "HF model directory (required)")
	cmd.Flags().StringVar(&adapterDir, "adapter", "", "PEFT LoRA adapter directory: gradients of the adapter, base frozen")
	cmd.Flags().StringVar(&batchPath, "batch", "", "batch JSON file (required)")
	cmd.Flags().StringVar(&out, "out", "", "output .safetensors file (required)")
	q.register(cmd)
	for _, f := range []string{"model", "batch", "out"} {
		cmd.MarkFlagRequired(f)
	}
	return cmd
}

// readGradBatch reads a dev grad batch file for m; a batch with nothing
// scored is refused, since its loss would be 0/0.
func readGradBatch(path string, m *engine.Model) (*engine.Batch, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var b struct {
		InputIDs   [][]int `json:"input_ids"`
		Labels     [][]int `json:"labels"`
		SegmentIDs [][]int `json:"segment_ids"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if b.Labels == nil {
		return nil, fmt.Errorf("%s: field \"labels\" is missing; give labels of the shape of input_ids (-100 where not scored)", path)
	}
	bt, err := engine.NewBatch(b.InputIDs, b.Labels, b.SegmentIDs, m.Config.VocabSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := m.CheckBatch(bt); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if bt.Scored() == 0 {
		return nil, fmt.Errorf("%s: no position is scored (every label is -100 or crosses a document boundary)", path)
	}
	return bt, nil
}
