package modelref_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/internal/testmodel"
	"hone/modelref"
)

// hfCache lays out a model as huggingface_hub does: refs/main holds the
// commit, snapshots/<commit>/ holds symlinks into blobs/.
func hfCache(t *testing.T, home, id string) {
	t.Helper()
	src := t.TempDir()
	testmodel.Write(t, src, testmodel.Llama3Tiny, 1)
	repo := filepath.Join(home, "hub", "models--"+strings.ReplaceAll(id, "/", "--"))
	snap := filepath.Join(repo, "snapshots", "0123abcd")
	for _, d := range []string{filepath.Join(repo, "blobs"), snap, filepath.Join(repo, "refs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(src)
	for i, e := range entries {
		blob := filepath.Join(repo, "blobs", "blob"+string(rune('a'+i)))
		if err := os.Rename(filepath.Join(src, e.Name()), blob); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "blobs", filepath.Base(blob)), filepath.Join(snap, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte("0123abcd"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	home := t.TempDir()
	hfCache(t, home, "meta-llama/Llama-3.2-1B-Instruct")
	r, err := modelref.New(modelref.Config{HFHome: home})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got, err := r.Resolve(ctx, "meta-llama/Llama-3.2-1B-Instruct")
	if err != nil {
		t.Fatal(err)
	}
	if got.Source != "hf-cache" || !strings.HasSuffix(got.Dir, filepath.Join("snapshots", "0123abcd")) || got.MaxContext != 2048 || !strings.Contains(got.License, "3.2") {
		t.Errorf("Resolve(HF id) = %+v", got)
	}
	// The snapshot's files are symlinks into blobs/, as huggingface_hub makes them.
	if _, err := engine.Load(got.Dir, cpu.New(1), engine.Options{}); err != nil {
		t.Errorf("load the HF-cache snapshot: %v", err)
	}

	local := t.TempDir()
	testmodel.Write(t, local, testmodel.Llama3Tiny, 2)
	if got, err := r.Resolve(ctx, local); err != nil || got.Source != "path" || got.Dir != local {
		t.Errorf("Resolve(dir) = %+v, %v", got, err)
	}

	mistral := t.TempDir()
	os.WriteFile(filepath.Join(mistral, "config.json"), []byte(`{"model_type": "qwen2_moe", "num_experts": 8}`), 0o644)
	for _, tc := range []struct{ ref, want string }{
		{"meta-llama/Meta-Llama-3.1-8B", "huggingface-cli download meta-llama/Meta-Llama-3.1-8B"},
		{mistral, `"model_type"`},
		{filepath.Join(local, "missing"), "not a directory"},
		{"", "required"},
	} {
		_, err := r.Resolve(ctx, tc.ref)
		if err == nil || !errors.Is(err, modelref.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Resolve(%q) = %v, want ErrInvalid mentioning %q", tc.ref, err, tc.want)
		}
	}
}

// The product's Mistral models are trainable (Llama math plus a sliding
// window), and the mixtures of experts Mixtral and DBRX.
func TestSupportedMistral(t *testing.T) {
	want := map[string]bool{"mistralai/Mistral-7B-v0.1": true, "mistralai/Mistral-7B-Instruct-v0.2": true,
		"mistralai/Mixtral-8x7B-v0.1": true, "databricks/dbrx-base": true}
	for _, s := range modelref.SupportedModels() {
		if w, ok := want[s.Name]; ok {
			if s.Trainable != w || s.MaxContext != 32768 {
				t.Errorf("%s: trainable %v, max context %d; want %v, 32768", s.Name, s.Trainable, s.MaxContext, w)
			}
			delete(want, s.Name)
		}
	}
	if len(want) != 0 {
		t.Errorf("missing from the table: %v", want)
	}
}
