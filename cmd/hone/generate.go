package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"hone/chattemplate"
	"hone/engine"
	"hone/engine/cpu"
	"hone/generate"
)

func generateCmd() *cobra.Command {
	var cf clientFlags
	var modelRef, prompt, format string
	var p generate.Params
	cmd := &cobra.Command{
		Use:   "generate --model DIR|catalog.schema.model[/N|@alias] --prompt TEXT",
		Short: "Complete a prompt with a local model directory or a registered model version",
		Long: `Formats the prompt as the model was trained (its chat template for chat models, plain text
otherwise) and samples a completion. A catalog name is looked up on the server (--server) and its
version's storage location is read from this machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := resolveModelDir(cmd, &cf, modelRef)
			if err != nil {
				return err
			}
			chat := format == "chat"
			if format == "auto" {
				_, err := chattemplate.FromModelDir(dir)
				chat = err == nil
			}
			pr, err := generate.NewPrompter(dir, chat)
			if err != nil {
				return err
			}
			m, err := engine.Load(dir, cpu.New(0), engine.Options{})
			if err != nil {
				return err
			}
			text, err := pr.Complete(cmd.Context(), m, prompt, p)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), text)
			return nil
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&modelRef, "model", "", "model directory or registered version (required)")
	f.StringVar(&prompt, "prompt", "", "prompt text (required)")
	f.StringVar(&format, "format", "auto", "auto (chat when the model has a chat template), chat or text")
	f.IntVar(&p.MaxNewTokens, "max-new-tokens", 100, "largest number of tokens to generate")
	f.Float64Var(&p.Temperature, "temperature", 0, "sampling temperature; 0 decodes greedily")
	f.IntVar(&p.TopK, "top-k", 50, "sample among the k likeliest tokens (0 = all)")
	f.Float64Var(&p.TopP, "top-p", 0.95, "nucleus sampling mass")
	f.Uint64Var(&p.Seed, "seed", 0, "sampling seed")
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("prompt")
	return cmd
}

// resolveModelDir accepts a local directory or a registered model
// "catalog.schema.model" with an optional "/version" or "@alias" (newest
// version otherwise).
func resolveModelDir(cmd *cobra.Command, cf *clientFlags, ref string) (string, error) {
	if st, err := os.Stat(ref); err == nil && st.IsDir() {
		return ref, nil
	}
	name, version, alias := ref, 0, ""
	if i := strings.LastIndexAny(ref, "/@"); i > 0 {
		name = ref[:i]
		if ref[i] == '@' {
			alias = ref[i+1:]
		} else {
			v, err := strconv.Atoi(ref[i+1:])
			if err != nil {
				return "", fmt.Errorf("model %q: not a directory, and %q is not a version number", ref, ref[i+1:])
			}
			version = v
		}
	}
	c, err := cf.client()
	if err != nil {
		return "", err
	}
	model, err := c.ShowModel(cmd.Context(), name)
	if err != nil {
		return "", fmt.Errorf("model %q: not a directory, and the catalog lookup failed: %w", ref, err)
	}
	best, dir := 0, ""
	for _, v := range model.Versions {
		match := (version == 0 && alias == "") || v.Version == version || (alias != "" && slices.Contains(v.Aliases, alias))
		if match && v.Version > best {
			best, dir = v.Version, v.StorageLocation
		}
	}
	if dir == "" {
		return "", fmt.Errorf("model %q: no such version of %s", ref, name)
	}
	return dir, nil
}
