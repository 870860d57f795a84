package main

import (
	"context"
	"fmt"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"hone/catalog"
	"hone/export"
	"hone/modelref"
)

func exportCmd() *cobra.Command {
	var cf clientFlags
	var modelRef, format, dtype, out, name string
	var adapterOnly bool
	cmd := &cobra.Command{
		Use:   "export --model REF --format gguf|hf --out PATH",
		Short: "Write a model as GGUF (llama.cpp, ollama) or as a Hugging Face directory",
		Long: `REF is a local HF model directory, a Hugging Face id in the local cache, or a registered
version (main.demo.bot/1, main.demo.bot@champion, main.demo.bot for the newest), whose directory
the server names and this machine must be able to read.

--format gguf writes FILE.gguf (llama architecture, tokenizer, chat template; matrices in --dtype,
norms in f32) and an ollama Modelfile beside it: ollama create NAME -f Modelfile. The quantized
dtypes are ggml's block types with llama-quantize's per-tensor mix: q8_0, q4_0, q6_k, and
q4_k_m / q5_k_m (mostly Q4_K / Q5_K, output and some attn_v / ffn_down layers in Q6_K).
--format hf writes a directory of bf16 safetensors, config.json, the tokenizer files and
generation_config.json.
An adapter version (registered with --register-adapter) is written merged into its base; with
--adapter-only, --format gguf writes llama.cpp's GGUF LoRA adapter at FILE.gguf, its base as
FILE.base.gguf and a Modelfile with FROM the base and ADAPTER the adapter, and --format hf copies
the PEFT directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := resolveModelDir(cmd.Context(), &cf, modelRef)
			if err != nil {
				return err
			}
			switch {
			case adapterOnly && format == "gguf":
				err = export.GGUFAdapter(cmd.Context(), dir, out, export.GGUFOptions{DType: dtype, Name: name})
			case adapterOnly && format == "hf":
				err = export.PEFT(dir, out)
			case format == "gguf":
				err = export.GGUF(cmd.Context(), dir, out, export.GGUFOptions{DType: dtype, Name: name})
			case format == "hf":
				if cmd.Flags().Changed("dtype") && dtype != "bf16" {
					return fmt.Errorf("--format hf writes bf16; --dtype %s applies to gguf only", dtype)
				}
				err = export.HF(cmd.Context(), dir, out)
			default:
				return fmt.Errorf("--format %q: want gguf or hf", format)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out)
			return nil
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&modelRef, "model", "", "local model directory, Hugging Face id or registered version (required)")
	f.StringVar(&format, "format", "gguf", "gguf or hf")
	f.StringVar(&dtype, "dtype", "bf16", "GGUF matrix type: "+export.DTypes)
	f.StringVar(&out, "out", "", "GGUF file or HF directory to write (required)")
	f.StringVar(&name, "name", "", "GGUF general.name (default the model directory's name)")
	f.BoolVar(&adapterOnly, "adapter-only", false, "for an adapter version: write the adapter (GGUF LoRA + base GGUF + Modelfile, or the PEFT directory) instead of merging it")
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("out")
	return cmd
}

// resolveModelDir finds the model directory of ref: a local directory, a
// registered version (asking the server where it is stored), or a Hugging
// Face id in the local cache.
func resolveModelDir(ctx context.Context, cf *clientFlags, ref string) (string, error) {
	if st, err := os.Stat(ref); err == nil && st.IsDir() {
		return ref, nil
	}
	model, version, alias := "", 0, ""
	if r, ok, err := catalog.ParseRef(ref); ok {
		if err != nil {
			return "", err
		}
		model, version, alias = r.Name.String(), r.Version, r.Alias
	} else if n, err := catalog.ParseName(ref); err == nil && n.Model != "" {
		model = ref
	}
	if model == "" {
		r, err := modelref.New(modelref.Config{})
		if err != nil {
			return "", err
		}
		res, err := r.Resolve(ctx, ref)
		if err != nil {
			return "", err
		}
		return res.Dir, nil
	}
	c, err := cf.client()
	if err != nil {
		return "", err
	}
	m, err := c.ShowModel(ctx, model)
	if err != nil {
		return "", fmt.Errorf("model %q: %w", ref, err)
	}
	var dir string
	for _, v := range m.Versions {
		if (version != 0 && v.Version == version) || (alias != "" && slices.Contains(v.Aliases, alias)) ||
			(version == 0 && alias == "") {
			dir = v.StorageLocation // versions are listed oldest first: the last match is the newest
		}
	}
	if dir == "" {
		return "", fmt.Errorf("model %q: no such version", ref)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", fmt.Errorf("model %q is stored at %s on the server, which this machine cannot read: run hone export where the server keeps its models", ref, dir)
	}
	return dir, nil
}
