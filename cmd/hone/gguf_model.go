package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"hone/export"
)

// unpackGGUFRef, when ref names a .gguf file, unpacks it (export.Unpack:
// the config and tokenizer it carries, weights dequantized to fp32) into a
// temporary model directory and returns that directory and a cleanup; ok
// is false when ref is not a GGUF file.
func unpackGGUFRef(ctx context.Context, ref string) (dir string, cleanup func(), ok bool, err error) {
	if !strings.HasSuffix(strings.ToLower(ref), ".gguf") {
		return "", nil, false, nil
	}
	if st, err := os.Stat(ref); err != nil || st.IsDir() {
		return "", nil, true, fmt.Errorf("--model %s: not a readable GGUF file (%v)", ref, err)
	}
	dir, err = os.MkdirTemp("", "hone-gguf-")
	if err != nil {
		return "", nil, true, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	slog.Info("unpacking GGUF into fp32 weights", "file", ref, "dir", dir)
	if err := export.Unpack(ctx, ref, dir); err != nil {
		cleanup()
		return "", nil, true, err
	}
	return dir, cleanup, true, nil
}
