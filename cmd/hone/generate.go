package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"hone/chattemplate"
	"hone/client"
	"hone/engine"
	"hone/export"
	"hone/generate"
	"hone/serving"
)

func generateCmd() *cobra.Command {
	var cf clientFlags
	var modelRef, prompt, format string
	var asJSON bool
	var p generate.Params
	cmd := &cobra.Command{
		Use:   "generate --model DIR|catalog.schema.model[/N|@alias] --prompt TEXT",
		Short: "Complete a prompt with a registered model version (on the server) or a local model or adapter directory",
		Long: `A registered name (main.demo.bot/1, main.demo.bot@champion, or main.demo.bot for the newest
version) is completed by the server (--server), as its /api/generate and OpenAI-compatible routes
would. A local HF model directory, or a PEFT adapter directory whose base_model_name_or_path is a
local model directory (merged into it in memory), or a GGUF file hone export wrote (decoding
reads its Q8_0, Q4_K, Q5_K and Q6_K matrices and token embeddings as they are, without an fp32 copy, its other tensors dequantized to fp32), is loaded
and completed here. Either way the prompt is formatted as
the model was trained: its chat template for chat models, plain text otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ggufFile := ""
			if dir, cleanup, ok, err := unpackGGUFRef(cmd.Context(), modelRef); ok {
				if err != nil {
					return err
				}
				defer cleanup()
				ggufFile, modelRef = modelRef, dir
			}
			if st, err := os.Stat(modelRef); err != nil || !st.IsDir() {
				return generateRemote(cmd, &cf, modelRef, prompt, format, p, asJSON)
			}
			files, err := engine.ModelFilesDir(modelRef) // a PEFT adapter's tokenizer is its base's
			if err != nil {
				return err
			}
			chat := format == "chat"
			if format == "auto" {
				_, err := chattemplate.FromModelDir(files)
				chat = err == nil
			}
			pr, err := generate.NewPrompter(files, chat)
			if err != nil {
				return err
			}
			dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
			if err != nil {
				return err
			}
			opt, err := serving.LoadOptions(modelRef)
			if err != nil {
				return err
			}
			var m *engine.Model
			if ggufFile != "" { // decoding reads its Q8_0, Q4_K, Q5_K and Q6_K matrices as they are
				m, _, err = export.LoadQuantized(ggufFile, modelRef, dev, 0)
			} else { // a registered GGUF version (export.QuantizedFile) decodes quantized too
				m, err = export.LoadDir(modelRef, dev, 0, func() (*engine.Model, error) { return engine.LoadWithAdapter(modelRef, dev, opt) })
			}
			if err != nil {
				return err
			}
			c, err := pr.Generate(cmd.Context(), m, prompt, p)
			if err != nil {
				return err
			}
			finish := client.FinishLength
			if c.Stopped {
				finish = client.FinishStop
			}
			return printCompletion(cmd, asJSON, generateOutput{Text: c.Text, PromptTokenIDs: c.PromptIDs, TokenIDs: c.IDs, FinishReason: finish})
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&modelRef, "model", "", "registered version, local model directory or GGUF file from hone export (required)")
	f.StringVar(&prompt, "prompt", "", "prompt text (required)")
	f.StringVar(&format, "format", "auto", "auto (chat when the model has a chat template), chat or text")
	f.IntVar(&p.MaxNewTokens, "max-new-tokens", 100, "largest number of tokens to generate")
	f.Float64Var(&p.Temperature, "temperature", 0, "sampling temperature; 0 decodes greedily")
	f.IntVar(&p.TopK, "top-k", 50, "sample among the k likeliest tokens (0 = all)")
	f.Float64Var(&p.TopP, "top-p", 0.95, "nucleus sampling mass")
	f.Uint64Var(&p.Seed, "seed", 0, "sampling seed")
	f.BoolVar(&asJSON, "json", false, `print one JSON line: {"text", "prompt_token_ids", "token_ids", "finish_reason"}`)
	cmd.MarkFlagRequired("model")
	cmd.MarkFlagRequired("prompt")
	return cmd
}

// generateRemote asks the server to complete prompt with a registered model.
func generateRemote(cmd *cobra.Command, cf *clientFlags, model, prompt, format string, p generate.Params, asJSON bool) error {
	c, err := cf.client()
	if err != nil {
		return err
	}
	req := client.GenerateRequest{Model: model, MaxTokens: p.MaxNewTokens, Temperature: &p.Temperature, TopP: &p.TopP,
		TopK: p.TopK, Seed: &p.Seed}
	if format == "text" {
		req.Prompt = prompt
	} else {
		req.Messages = []client.ChatMessage{{Role: "user", Content: prompt}}
	}
	res, err := c.Generate(cmd.Context(), req)
	if err != nil && format == "auto" && client.StatusOf(err) == 400 {
		// A model without a chat template takes plain text.
		req.Messages, req.Prompt = nil, prompt
		res, err = c.Generate(cmd.Context(), req)
	}
	if err != nil {
		return fmt.Errorf("model %q: %w", model, err)
	}
	if asJSON && res.PromptTokenIDs == nil {
		return fmt.Errorf("model %q: the server sent no token ids (it predates hone generate --json)", model)
	}
	return printCompletion(cmd, asJSON, generateOutput{Text: res.Text, PromptTokenIDs: res.PromptTokenIDs, TokenIDs: res.TokenIDs,
		FinishReason: res.FinishReason})
}

// generateOutput is what hone generate --json prints: the completion and
// the token ids on both sides, for scripts comparing hone with another
// runtime token for token.
type generateOutput struct {
	Text           string `json:"text"`
	PromptTokenIDs []int  `json:"prompt_token_ids"` // BOS included as the model adds it
	TokenIDs       []int  `json:"token_ids"`        // an end token included
	FinishReason   string `json:"finish_reason"`    // "stop" or "length"
}

func printCompletion(cmd *cobra.Command, asJSON bool, o generateOutput) error {
	if !asJSON {
		_, err := fmt.Fprintln(cmd.OutOrStdout(), o.Text)
		return err
	}
	if o.TokenIDs == nil {
		o.TokenIDs = []int{} // none sampled: the prompt filled the context window
	}
	return json.NewEncoder(cmd.OutOrStdout()).Encode(o)
}
