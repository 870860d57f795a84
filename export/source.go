// Package export writes a hone model (an HF Llama directory) in the formats
// other runtimes load: GGUF for llama.cpp and ollama (with an ollama
// Modelfile beside it), and a plain Hugging Face directory in bf16.
//
// Exports read the source weights through a memory map and write one tensor
// at a time, so memory holds one tensor (GGUF) or the model once in float32
// (HF). Every file is written atomically; a failed export leaves no partial
// file under the destination name. The functions are safe for concurrent
// use on different destinations.
package export

import (
	"errors"
	"fmt"
	"slices"

	"hone/engine"
	"hone/safetensors"
	"hone/tokenizer"
)

// ErrInvalid marks an export request that cannot be carried out; the
// message says why.
var ErrInvalid = errors.New("invalid export")

// source is an opened model directory whose tensors match its config.
type source struct {
	dir string
	cfg *engine.Config
	st  *safetensors.Model
	tok *tokenizer.Tokenizer
}

func openSource(dir string) (*source, error) {
	cfg, err := engine.LoadConfig(dir)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	for _, s := range cfg.ParamSpecs() {
		info, ok := st.Info(s.Name)
		if !ok {
			st.Close()
			return nil, fmt.Errorf("export: %s: tensor %q is missing (config.json implies it)", dir, s.Name)
		}
		if !slices.Equal(info.Shape, s.Shape) {
			st.Close()
			return nil, fmt.Errorf("export: %s: tensor %q has shape %v, config.json implies %v", dir, s.Name, info.Shape, s.Shape)
		}
	}
	return &source{dir: dir, cfg: cfg, st: st, tok: tok}, nil
}

func (s *source) Close() error { return s.st.Close() }
