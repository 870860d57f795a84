// Package testassets locates the real test assets that scripts/test-assets.sh
// fetches into .cache/assets. A missing asset fails the test: it never skips.
package testassets

import (
	"os"
	"path/filepath"
	"testing"
)

// Root returns the repository root (the directory holding go.mod).
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testassets: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Path returns the path of rel inside .cache/assets and fails the test if it
// does not exist.
func Path(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(Root(t), ".cache", "assets", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test asset %s missing: run scripts/test-assets.sh (%v)", p, err)
	}
	return p
}

// ChatData returns the folder of a fixed chat data set (train.jsonl, 400
// conversations; eval.jsonl, 40): the demo data of an earlier version, kept
// for tests that count on its size (epoch lengths, example counts), which
// the demo's data in examples/chat may change.
func ChatData(t testing.TB) string {
	return filepath.Join(Root(t), "internal", "testassets", "chat")
}
