package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"hone/engine"
)

// QuantizedFile is the GGUF file a model directory may hold beside its
// unpacked weights: loading such a directory for decoding (LoadDir, hence
// hone serve) reads the quantized matrices of this file instead of the
// fp32 ones.
const QuantizedFile = "model.gguf"

// UnpackServable writes dir as a model directory that decodes from the
// quantized GGUF file at path: Unpack's files (config, tokenizer and fp32
// weights, which the tensors the kernels do not take are read from) and a
// copy of the file as QuantizedFile. Registered as a catalog version, it
// is served from the quantized matrices.
func UnpackServable(ctx context.Context, path, dir string) error {
	if err := Unpack(ctx, path, dir); err != nil {
		return err
	}
	dst := filepath.Join(dir, QuantizedFile)
	if err := copyFileAtomic(path, dst); err != nil {
		return fmt.Errorf("copy %s into %s: %w", path, dir, err)
	}
	return nil
}

// LoadDir loads the model directory dir for decoding: from its
// QuantizedFile's quantized matrices when it holds one (LoadQuantized,
// with up to threads goroutines), else with load.
func LoadDir(dir string, dev engine.Device, threads int, load func() (*engine.Model, error)) (*engine.Model, error) {
	q := filepath.Join(dir, QuantizedFile)
	if _, err := os.Stat(q); errors.Is(err, os.ErrNotExist) {
		return load()
	} else if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	m, _, err := LoadQuantized(q, dir, dev, threads)
	return m, err
}

// copyFileAtomic copies src to dst through a synced temporary file.
func copyFileAtomic(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = io.Copy(tmp, in); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
