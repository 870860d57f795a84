package export

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"hone/chattemplate"
	"hone/engine"
)

// ModelfileName is the ollama Modelfile written beside an exported GGUF.
const ModelfileName = "Modelfile"

// llama3Template is ollama's Go template for Llama 3's header format.
const llama3Template = `{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>

{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

{{ .Response }}<|eot_id|>`

// instTemplate is ollama's template for the [INST] format (Llama 2, Mistral).
const instTemplate = `[INST] {{ if .System }}{{ .System }} {{ end }}{{ .Prompt }} [/INST]`

// modelfile returns an ollama Modelfile for the GGUF file gguf of src:
// FROM, the chat format as an ollama TEMPLATE where it is one ollama knows
// (Llama 3 headers, [INST]), and a stop parameter for every token that
// ends a generation. Without a TEMPLATE ollama uses the GGUF's
// tokenizer.chat_template.
func modelfile(src *source, ggufFile string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "FROM ./%s\n", filepath.Base(ggufFile))
	stops := []string{}
	addStop := func(s string) {
		if s != "" && !strings.ContainsAny(s, "\"\n") && !slices.Contains(stops, s) {
			stops = append(stops, s)
		}
	}
	tmpl, err := chattemplate.FromModelDir(src.dir)
	if err != nil && !errors.Is(err, chattemplate.ErrNoTemplate) {
		return "", fmt.Errorf("export: %w", err)
	}
	if tmpl != nil {
		switch t := tmpl.Source(); {
		case strings.Contains(t, "<|start_header_id|>") && strings.Contains(t, "<|eot_id|>"):
			fmt.Fprintf(&b, "TEMPLATE \"\"\"%s\"\"\"\n", llama3Template)
			addStop("<|start_header_id|>")
			addStop("<|end_header_id|>")
		case strings.Contains(t, "[INST]") && strings.Contains(t, "[/INST]"):
			fmt.Fprintf(&b, "TEMPLATE \"\"\"%s\"\"\"\n", instTemplate)
			addStop("[INST]")
			addStop("[/INST]")
		}
	}
	for _, id := range stopIDs(src) {
		if s, ok := src.tok.Token(id); ok {
			addStop(s)
		}
	}
	slices.Sort(stops)
	for _, s := range stops {
		fmt.Fprintf(&b, "PARAMETER stop \"%s\"\n", s)
	}
	return b.String(), nil
}

// stopIDs are the ids that end a generation: the tokenizer's end ids and
// config.json's eos_token_id, as hone's own generation uses them.
func stopIDs(src *source) []int {
	ids := slices.Clone(src.tok.Special().EOSIDs)
	for _, id := range src.cfg.EOSTokenID {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// writeModelfile writes the Modelfile beside the GGUF file.
func writeModelfile(src *source, ggufFile string) error {
	mf, err := modelfile(src, ggufFile)
	if err != nil {
		return err
	}
	path := filepath.Join(filepath.Dir(ggufFile), ModelfileName)
	if err := engine.WriteFileAtomic(path, []byte(mf)); err != nil {
		return fmt.Errorf("export: write %s: %w", path, err)
	}
	return nil
}
