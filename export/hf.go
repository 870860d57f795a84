package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"hone/engine"
	"hone/safetensors"
)

// hfFiles are the non-weight files of an HF model directory that an HF
// export carries over unchanged.
var hfFiles = []string{
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
	"chat_template.jinja", "chat_template.json", "LICENSE", "USE_POLICY.md",
}

// HF writes the model in dir (or a PEFT adapter directory's adapter merged
// into its base) to the directory out as Hugging Face
// transformers loads it: bf16 safetensors (sharded past 5 GB), config.json
// (torch_dtype bfloat16), the tokenizer files, and generation_config.json
// (the source's, or one naming the model's BOS and end ids).
func HF(ctx context.Context, dir, out string) error {
	if same, err := sameDir(dir, out); err != nil || same {
		if err == nil {
			err = fmt.Errorf("%w: --out %s is the source model directory", ErrInvalid, out)
		}
		return err
	}
	dir, cleanup, err := mergedSource(dir, out)
	if err != nil {
		return err
	}
	defer cleanup()
	src, err := openSource(dir)
	if err != nil {
		return err
	}
	defer src.Close()
	var tensors []safetensors.Tensor
	for _, p := range src.cfg.ParamSpecs() {
		if err := ctx.Err(); err != nil {
			return err
		}
		x := make([]float32, p.Size())
		if err := src.st.Float32(p.Name, x); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		tensors = append(tensors, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: x})
	}
	if err := safetensors.WriteModel(out, tensors, safetensors.WriteOptions{DType: safetensors.BF16}); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if err := writeHFConfig(dir, out); err != nil {
		return err
	}
	for _, name := range hfFiles {
		if err := copyFile(filepath.Join(dir, name), filepath.Join(out, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("export: copy %s: %w", name, err)
		}
	}
	return writeGenerationConfig(src, out)
}

func sameDir(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, fmt.Errorf("export: %w", err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, nil // out does not exist yet
	}
	return os.SameFile(sa, sb), nil
}

// writeHFConfig keeps every field of the source config.json and records
// the bf16 weights.
func writeHFConfig(dir, out string) error {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	raw := map[string]any{}
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("export: %s: %w", filepath.Join(dir, "config.json"), err)
	}
	raw["torch_dtype"] = "bfloat16"
	return writeJSON(filepath.Join(out, "config.json"), raw)
}

// writeGenerationConfig copies the source's generation_config.json, or
// writes one whose eos_token_id lists every id hone stops at, so that
// transformers' generate stops where hone's does.
func writeGenerationConfig(src *source, out string) error {
	const name = "generation_config.json"
	err := copyFile(filepath.Join(src.dir, name), filepath.Join(out, name))
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	gc := map[string]any{"_from_model_config": true}
	if sp := src.tok.Special(); sp.BOS >= 0 {
		gc["bos_token_id"] = sp.BOS
	}
	if ids := stopIDs(src); len(ids) > 0 {
		gc["eos_token_id"] = engine.TokenIDs(ids)
	}
	if sp := src.tok.Special(); sp.PAD >= 0 {
		gc["pad_token_id"] = sp.PAD
	}
	return writeJSON(filepath.Join(out, name), gc)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := engine.WriteFileAtomic(path, append(b, '\n')); err != nil {
		return fmt.Errorf("export: write %s: %w", path, err)
	}
	return nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return engine.WriteFileAtomic(to, b)
}
