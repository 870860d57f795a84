package export

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"hone/engine"
	"hone/gguf"
	"hone/safetensors"
)

// honeFiles are the model directory's files a GGUF export carries verbatim
// under "hone.file.NAME" keys, so that hone can load the file back with
// exactly the tokenizer, template and config it was exported from
// (llama.cpp ignores keys it does not know).
var honeFiles = []string{"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}

// writeHoneFiles adds the honeFiles present in dir to w.
func writeHoneFiles(w *gguf.Writer, dir string) error {
	for _, name := range honeFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case errors.Is(err, os.ErrNotExist) && name != "config.json":
			continue
		case err != nil:
			return fmt.Errorf("export: %w", err)
		}
		w.String("hone.file."+name, string(b))
	}
	return nil
}

// Unpack writes the GGUF file that hone export wrote at path as an HF
// model directory dir: the config and tokenizer files it carries, and the
// weights dequantized to float32 (every quantized value is exact in
// float32), one tensor at a time. It is how hone decodes a quantized GGUF
// file: the same weights llama.cpp multiplies, in hone's fp32 engine.
func Unpack(ctx context.Context, path, dir string) error {
	g, err := gguf.Open(path)
	if err != nil {
		return err
	}
	meta := g.Meta
	g.Close()
	if _, ok := meta["hone.file.config.json"].(string); !ok {
		return fmt.Errorf("%w: %s carries no hone.file.config.json: hone loads the GGUF files its own export writes (export it again with this version of hone)", ErrInvalid, path)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range honeFiles {
		if s, ok := meta["hone.file."+name].(string); ok {
			if err := engine.WriteFileAtomic(filepath.Join(dir, name), []byte(s)); err != nil {
				return fmt.Errorf("unpack %s: %w", path, err)
			}
		}
	}
	c, err := engine.LoadConfig(dir)
	if err != nil {
		return fmt.Errorf("unpack %s: %w", path, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	tensors, closeFn, err := GGUFWeights(path, c)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := safetensors.WriteModel(dir, tensors, safetensors.WriteOptions{DType: safetensors.F32}); err != nil {
		return fmt.Errorf("unpack %s: %w", path, err)
	}
	return nil
}
