package runs_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/client"
	"hone/dataset"
	"hone/store/storetest"
)

// tree lists every path under root, for asserting that a refused request
// wrote nothing (no run work directory, no data cache).
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !strings.Contains(p, "hone.db") { // the store's own files change
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestCreateRefusesBadWeights: a truncated model.safetensors and a
// config.json whose hidden_size disagrees with the weights are refused by
// create (400 naming the file, the tensor and both sizes or shapes) and by
// data validation, leaving no run and nothing on disk.
func TestCreateRefusesBadWeights(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	ctx := context.Background()
	home, data, model := fixture(t)
	c := serveInProcess(t, st, home, data)

	truncated := filepath.Join(data, "truncated")
	mismatched := filepath.Join(data, "mismatched")
	for _, dir := range []string{truncated, mismatched} {
		os.MkdirAll(dir, 0o755)
		for _, f := range []string{"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"} {
			copyFile(t, filepath.Join(model, f), filepath.Join(dir, f))
		}
	}
	weights := filepath.Join(truncated, "model.safetensors")
	fi, _ := os.Stat(weights)
	if err := os.Truncate(weights, fi.Size()-100); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(model, "config.json"))
	cfg = []byte(strings.Replace(string(cfg), `"hidden_size": 16`, `"hidden_size": 32`, 1))
	if err := os.WriteFile(filepath.Join(mismatched, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		dir  string
		want []string
	}{
		{truncated, []string{weights, "truncated", "tensor "}},
		{mismatched, []string{filepath.Join(mismatched, "model.safetensors"), `tensor "model.embed_tokens.weight"`, "[128256 16]", "[128256 32]", "hidden_size 32"}},
	} {
		before := tree(t, home)
		req := request(data, tc.dir)
		_, err := c.CreateRun(ctx, req)
		if client.StatusOf(err) != 400 {
			t.Fatalf("CreateRun(%s) = %v, want 400", tc.dir, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("CreateRun(%s) error %q does not name %q", tc.dir, err, w)
			}
		}
		if l, _ := c.ListRuns(ctx, client.ListRunsOptions{}); len(l.Runs) != 0 {
			t.Fatalf("refused create left runs: %+v", l.Runs)
		}
		if after := tree(t, home); !slices.Equal(before, after) {
			t.Errorf("refused create wrote files: before %v\nafter %v", before, after)
		}
		v, err := c.ValidateRun(ctx, req)
		if err != nil || v.OK || !strings.Contains(v.Error, tc.want[0]) {
			t.Errorf("ValidateRun(%s) = %+v, %v; want refused naming %s", tc.dir, v, err, tc.want[0])
		}

		_, err = dataset.Validate(ctx, tc.dir, dataset.Chat, req.TrainDataPath, dataset.Options{ContextLength: 256})
		if err == nil || !strings.Contains(err.Error(), tc.want[0]) || !strings.Contains(err.Error(), tc.want[1]) {
			t.Errorf("dataset.Validate(%s) = %v, want an error naming %s and %s", tc.dir, err, tc.want[0], tc.want[1])
		}
	}
}
