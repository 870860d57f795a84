package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"

	"github.com/spf13/cobra"

	"hone/bench"
	"hone/collective"
	"hone/engine"
	"hone/modelref"
	"hone/settings"
)

func benchCmd() *cobra.Command {
	var steps, threads, loraRank int
	var loraOnly bool
	var python, script, configs string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Compare training speed and memory with the PyTorch peer, side by side",
		Long: `Runs hone and the PyTorch reference (tools/bench/torch_train.py with Debian's python3-torch)
on the same configs, sequence, batch and thread counts, each in a fresh process, and prints tokens/s,
GFLOP/s, peak RSS and the ratios. A LoRA case (--lora-rank) runs hone's frozen bf16 base against
tools/bench/torch_lora.py, and the LoRA/full tokens/s ratio of each engine is printed below the table.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if threads <= 0 {
				threads = runtime.NumCPU()
			}
			cases := benchCases(configs, steps, threads, loraRank, loraOnly)
			rows, err := bench.Compare(cmd.Context(), exe, python, script, cases, cmd.ErrOrStderr())
			bench.WriteTable(cmd.OutOrStdout(), rows)
			return err
		},
	}
	cmd.Flags().IntVar(&steps, "steps", 5, "timed steps per case (after one warm-up step)")
	cmd.Flags().IntVar(&threads, "threads", 0, "threads (0 = all cores); cases also run at 1 thread")
	cmd.Flags().StringVar(&python, "python", "/usr/bin/python3", "python with torch for the peer")
	cmd.Flags().StringVar(&script, "torch-script", "tools/bench/torch_train.py", "PyTorch peer script")
	cmd.Flags().StringVar(&configs, "configs", "bench/configs", "directory of bench configs")
	cmd.Flags().IntVar(&loraRank, "lora-rank", 16, "rank of the LoRA case (llama-125m, bf16, against tools/bench/torch_lora.py); 0 = none")
	cmd.Flags().BoolVar(&loraOnly, "lora-only", false, "run only the LoRA case and the full bf16 case of its shape")
	cmd.AddCommand(benchTrainCmd(), benchGenerateCmd(), benchCollectiveCmd(), benchCeilingCmd(), benchScaleCmd())
	return cmd
}

// benchCases are hone bench's cases: llama-125m in fp32 and bf16 at one
// thread and at threads, llama-small, and the LoRA case beside the full bf16
// case of its shape (for the LoRA/full ratio); loraOnly keeps just those two.
func benchCases(configs string, steps, threads, loraRank int, loraOnly bool) []bench.Case {
	c125 := bench.Case{ConfigPath: filepath.Join(configs, "llama-125m.json"), Seq: 256, Batch: 4, Steps: steps, Precision: "bf16", Threads: threads}
	if loraOnly && loraRank > 0 {
		lora := c125
		lora.LoRARank = loraRank
		return []bench.Case{c125, lora}
	}
	var cases []bench.Case
	for _, th := range uniq(1, threads) {
		for _, p := range []string{"fp32", "bf16"} {
			c := c125
			c.Precision, c.Threads = p, th
			cases = append(cases, c)
		}
	}
	for _, p := range []string{"fp32", "bf16"} {
		cases = append(cases, bench.Case{ConfigPath: filepath.Join(configs, "llama-small.json"), Seq: 256, Batch: 4, Steps: steps, Precision: p, Threads: threads})
	}
	if loraRank > 0 {
		c125.LoRARank = loraRank
		cases = append(cases, c125)
	}
	return cases
}

func uniq(a, b int) []int {
	if a == b {
		return []int{a}
	}
	return []int{a, b}
}

func benchTrainCmd() *cobra.Command {
	var s bench.TrainSpec
	var configPath string
	var asJSON bool
	var profile string
	var kernelTimes, planOnly bool
	var planMemory byteSize
	var ranks int
	cmd := &cobra.Command{
		Use:   "train --config CONFIG.json --seq N --batch N --steps N --precision bf16|fp32 [--optimizer adamw|lionw] [--lora-rank R [--lora-targets ...] [--quantize-base nf4]] [--ranks R] [--plan] [--json]",
		Short: "Train a random model of an HF config on random tokens and report tokens/s and peak RSS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := os.ReadFile(configPath)
			if err != nil {
				return err
			}
			if s.Config, err = engine.ParseConfig(raw); err != nil {
				return fmt.Errorf("%s: %w", configPath, err)
			}
			if ranks > 1 && !cmd.Flags().Changed("shard-optimizer") && !s.ShardParameters {
				// Exact like plain data parallelism, and it moves fewer bytes
				// and runs 1/N of the optimizer (README, "Several machines").
				if err := cmd.Flags().Set("shard-optimizer", "true"); err != nil {
					return err
				}
			}
			if planOnly {
				s.PlanRanks = ranks
				return printPlan(cmd.OutOrStdout(), s, int64(planMemory), asJSON)
			}
			if done, err := benchTrainRanks(cmd, &s, ranks, asJSON); done || err != nil {
				return err
			}
			if s.Coll != nil {
				defer s.Coll.Close()
			}
			if profile != "" {
				if r := os.Getenv(collective.EnvRank); r != "" {
					profile += ".rank" + r // a launched rank: one profile each
				}
				f, err := os.Create(profile)
				if err != nil {
					return err
				}
				defer f.Close()
				pprof.StartCPUProfile(f)
				defer pprof.StopCPUProfile()
			}
			if kernelTimes {
				s.KernelTimes = printLines(cmd.ErrOrStderr())
			}
			s.MFU = true
			s.Progress = func(step int, seconds float64, peakRSS int64) {
				warm := ""
				if step == 0 {
					warm = " (warm-up)"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "step %d%s: %.1f s, %.1f tokens/s, peak RSS %d bytes\n",
					step, warm, seconds, float64(s.Seq*s.Batch)/seconds, peakRSS)
			}
			res, err := bench.Train(cmd.Context(), s)
			if err != nil {
				return err
			}
			if asJSON {
				b, _ := json.Marshal(res)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s %s: %d params (%d trained), seq %d × batch %d, %d threads: %.1f tokens/s, %.0f GFLOP/s (MFU %.2f of %.0f), peak RSS %.2f GiB, loss %.4f → %.4f\n",
				configPath, res.Method, res.Optimizer, res.Precision, res.Params, res.Trainable, res.Seq, res.Batch, res.Threads, res.TokensPerS, res.GFLOPs,
				res.MFU, res.CeilingGFLOPs, float64(res.PeakRSSBytes)/(1<<30), res.Losses[0], res.Losses[len(res.Losses)-1])
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "HF config.json (required)")
	f.IntVar(&s.Seq, "seq", 256, "tokens per row")
	f.IntVar(&s.Batch, "batch", 4, "rows per optimizer step")
	f.IntVar(&s.Steps, "steps", 5, "timed steps after one warm-up step")
	f.StringVar(&s.Precision, "precision", "bf16", "bf16 (bf16 matmuls, fp32 master weights) or fp32")
	f.IntVar(&s.Threads, "threads", 0, "threads (0 = all cores)")
	f.BoolVar(&s.Recompute, "recompute", false, "recompute activations in the backward pass (less memory; the last layer keeps its attention outputs)")
	f.BoolVar(&s.KeepAttention, "keep-attention", false, "with --recompute: keep each layer's attention output and log-sum-exp so the recomputation skips the attention (more memory; a plan without --recompute turns it on where it fits)")
	f.IntVar(&s.KeepAttentionLayers, "keep-attention-layers", 0, "with --recompute: keep the attention outputs of only this many layers (with --checkpoint-every, of a segment), the last ones; implies --keep-attention (0: every layer's)")
	f.IntVar(&s.CheckpointEvery, "checkpoint-every", 0, "with --recompute: keep residual checkpoints, segments of at most this many layers (less memory, one more forward pass of most layers)")
	f.BoolVar(&s.Compact, "compact", false, "bf16: convert weights per layer instead of keeping a bf16 copy (2 bytes/parameter less)")
	f.IntVar(&s.LossChunk, "loss-chunk", 0, "token rows the output head and cross-entropy run on at once (0 = the default for the vocabulary)")
	f.Uint64Var(&s.Seed, "seed", 0, "random seed")
	f.StringVar(&s.Optimizer, "optimizer", settings.Optimizer, fmt.Sprintf("%s, with a training run's defaults (LionW: one moment, half AdamW's state; learning rate %g full, %g LoRA; AdamW here at 1e-4)",
		strings.Join(settings.Optimizers(), " or "), settings.LionWLearningRate, settings.LionWLoRALearningRate))
	f.IntVar(&s.LoRARank, "lora-rank", 0, "train a LoRA adapter of this rank on a frozen base (bf16: base held in bf16 only) instead of the whole model")
	f.Float64Var(&s.LoRAAlpha, "lora-alpha", 0, "LoRA alpha (0 = 2 × rank)")
	f.Float64Var(&s.LoRADropout, "lora-dropout", 0, fmt.Sprintf("LoRA dropout (hone create's default is %g; its masks and buffers are in the plan)", settings.LoRADropout))
	f.StringSliceVar(&s.LoRATargets, "lora-targets", nil, "modules the adapter wraps (default the architecture's: Llama's seven projections; Mixtral's attention and experts w1,w2,w3; DBRX's Wqkv,out_proj)")
	f.BoolVar(&s.NF4Embeddings, "nf4-embeddings", false, "with --quantize-base nf4: hold the embeddings and output head in NF4 too (QLoRA keeps them in bf16)")
	f.StringVar(&s.QuantizeBase, "quantize-base", "", `with --lora-rank: hold the frozen base's layer matrices in "nf4" (QLoRA: 4-bit NormalFloat, double-quantized scales)`)
	f.StringVar(&profile, "cpuprofile", "", "write a Go CPU profile (Go kernels only; oneDNN time shows as cgo; with --ranks one a rank, PATH.rankN)")
	f.BoolVar(&kernelTimes, "kernel-times", false, "print time per device kernel over the timed steps on stderr")
	f.BoolVar(&planOnly, "plan", false, "print the memory plan (peak_bytes and its parts, with the savings this machine's memory needs) without training")
	f.Var(&planMemory, "plan-memory", "with --plan: the memory to plan against, e.g. 24GiB (default: what this machine has available)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object as the last stdout line")
	f.BoolVar(&s.ShardOptimizer, "shard-optimizer", false, "with --ranks: shard the optimizer state across the ranks (ZeRO stage 1; each rank receives its shard's gradients and sends its updated weights); default on with --ranks > 1, --shard-optimizer=false for plain data parallelism")
	f.BoolVar(&s.ShardParameters, "shard-parameters", false, "with --ranks: shard the parameters, gradients and optimizer state across the ranks, gathering one layer at a time (ZeRO stage 3; full fine-tuning, or a LoRA on the sharded base, fp32 or --quantize-base nf4)")
	f.DurationVar(&s.CeilingTime, "ceiling-time", bench.CeilingTime, "time the matmul ceiling (mfu's denominator) for at least this long before and after the steps")
	f.IntVar(&ranks, "ranks", 1, "data-parallel ranks: separate local processes over Gloo (loopback), each --threads threads, splitting --batch")
	cmd.MarkFlagRequired("config")
	return cmd
}

func benchGenerateCmd() *cobra.Command {
	var s bench.GenerateSpec
	var ref string
	var asJSON, kernelTimes bool
	var background int
	cmd := &cobra.Command{
		Use:   "generate --model REF --new-tokens N --streams S [--prompt-tokens P] [--background-streams B] [--json]",
		Short: "Decode S streams together and report the aggregate generated tokens/s",
		Long: `Loads the model (a directory or a Hugging Face id in the local cache), starts S streams of P random
prompt tokens and decodes N tokens for each (greedy, or sampled with --temperature), all streams in one batched step as hone serve does.
tokens_per_s counts the tokens of every stream; stream_tokens_per_s is what one stream sees.
--precision bf16 decodes on bf16 weights (default fp32, as hone serve does); --precision nf4 on the base a QLoRA
run (lora.quantize_base nf4) decodes its eval prompts on: layer matrices in NF4, embeddings and head in bf16. --peer llamacpp and --peer torch then decode the same
prompt, one stream, same threads and precision: llama.cpp on the GGUF hone export writes (the model
directory needs its tokenizer), PyTorch on a model of the same config; "peers" in the JSON line holds
each one's tokens/s and hone's ratio to it. REF may be a GGUF file hone export wrote (quantized or
not): hone decodes its Q8_0, Q4_K, Q5_K and Q6_K matrices with its integer-dot kernels (--precision
quantized, the default for a GGUF file; its other tensors, and the prompt, from their fp32 copy) or
all of it dequantized (--precision fp32), and the llama.cpp peer decodes the file itself.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir, cleanup, ok, err := unpackGGUFRef(cmd.Context(), ref); ok {
				if err != nil {
					return err
				}
				defer cleanup()
				s.Dir, s.GGUF = dir, ref
				if !cmd.Flags().Changed("precision") {
					s.Precision = "quantized"
				}
			} else {
				refs, err := modelref.New(modelref.Config{})
				if err != nil {
					return err
				}
				model, err := refs.Resolve(cmd.Context(), ref)
				if err != nil {
					return err
				}
				s.Dir = model.Dir
			}
			if background > 0 {
				return printServe(cmd.OutOrStdout(), cmd.Context(), bench.ServeSpec{Dir: s.Dir, PromptTokens: s.PromptTokens,
					Background: background, Threads: s.Threads, Seed: s.Seed}, asJSON)
			}
			if kernelTimes {
				s.KernelTimes = printLines(cmd.ErrOrStderr())
			}
			res, err := bench.Generate(cmd.Context(), s)
			if err != nil {
				return err
			}
			for _, p := range res.Peers {
				if p.BLAS != nil && p.BLAS.Reference {
					fmt.Fprintln(cmd.ErrOrStderr(), p.BLAS)
				}
			}
			if asJSON {
				b, _ := json.Marshal(res)
				fmt.Fprintln(cmd.OutOrStdout(), string(b))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d params, %d streams × %d new tokens after %d, %d threads: %.1f tokens/s (%.1f per stream), prefill %.1f tokens/s, weights %.2f GiB, peak RSS %.2f GiB\n",
				ref, res.Params, res.Streams, res.NewTokens, res.PromptTokens, res.Threads, res.TokensPerS, res.StreamTokensS,
				res.PrefillTokS, float64(res.WeightBytes)/(1<<30), float64(res.PeakRSSBytes)/(1<<30))
			for _, p := range res.Peers {
				fmt.Fprintf(cmd.OutOrStdout(), "%s (%s): %.1f tokens/s; hone/peer %.2f\n", p.Engine, p.Precision, p.TokensPerS, p.Ratio)
				if p.BLAS != nil {
					fmt.Fprintln(cmd.OutOrStdout(), p.BLAS)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ref, "model", "", "model directory or Hugging Face id (required)")
	f.IntVar(&s.NewTokens, "new-tokens", 64, "timed tokens per stream (after one warm-up token)")
	f.IntVar(&s.Streams, "streams", 1, "streams decoded together")
	f.IntVar(&background, "background-streams", 0, "instead: submit one --prompt-tokens prompt to hone serve's batch scheduler while this many other streams decode, and report their inter-token gaps (p50, p99, max) and the prompt's prefill tokens/s")
	f.IntVar(&s.PromptTokens, "prompt-tokens", 32, "random prompt tokens per stream (prefill_tokens_per_s reports how fast they are read)")
	f.IntVar(&s.PrefillChunk, "prefill-chunk", 0, "prompt tokens per model call (hone serve reads 64 at a time); 0 = the whole prompt at once")
	f.IntVar(&s.Threads, "threads", 0, "threads (0 = all cores)")
	f.Uint64Var(&s.Seed, "seed", 0, "random seed")
	f.Float64Var(&s.Temperature, "temperature", 0, "sampling temperature (0: greedy)")
	f.StringVar(&s.Precision, "precision", "fp32", "weights decoding reads: fp32 (as hone serve), bf16 or nf4 (QLoRA's base); activations and sums are fp32 either way")
	f.BoolVar(&kernelTimes, "kernel-times", false, "print time per device kernel over the timed steps on stderr")
	f.StringSliceVar(&s.Peers, "peer", nil, "also decode the same prompt in llamacpp (node-llama-cpp on hone's GGUF export) and/or torch, one stream")
	f.StringVar(&s.Tools.Node, "node", "node", "node, for the llama.cpp peer")
	f.StringVar(&s.Tools.LlamaCppScript, "llamacpp-script", "tools/bench/llamacpp_generate.mjs", "llama.cpp peer script")
	f.StringVar(&s.Tools.LlamaCppModules, "llamacpp-modules", ".cache/assets/node-llama-cpp/node_modules",
		"node_modules with node-llama-cpp 3.21.1 (scripts/test-assets.sh installs it)")
	f.StringVar(&s.Tools.Python, "python", "/usr/bin/python3", "python with torch, for the torch peer")
	f.StringVar(&s.Tools.TorchScript, "torch-script", "tools/bench/torch_generate.py", "PyTorch peer script")
	f.BoolVar(&asJSON, "json", false, "print one JSON object as the last stdout line")
	cmd.MarkFlagRequired("model")
	return cmd
}

// printLines prints each of lines on w (the --kernel-times report).
func printLines(w io.Writer) func(lines []string) {
	return func(lines []string) {
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
}
