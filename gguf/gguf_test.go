package gguf

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriterRefusesDuplicates(t *testing.T) {
	w := NewWriter()
	w.Uint32("a", 1)
	w.String("a", "again")
	fill := func(dst []byte) error { return nil }
	w.AddTensor(Tensor{Name: "t", Shape: []int{2}, Type: F32, Fill: fill})
	w.AddTensor(Tensor{Name: "t", Shape: []int{2}, Type: F32, Fill: fill})
	w.AddTensor(Tensor{Name: "q", Shape: []int{2}, Type: 3, Fill: fill}) // q4_1: not written by hone
	w.AddTensor(Tensor{Name: "k", Shape: []int{4, 100}, Type: Q4_K, Fill: fill})
	err := w.WriteFile(filepath.Join(t.TempDir(), "x.gguf"))
	for _, want := range []string{`key "a" set twice`, `tensor "t" added twice`, `tensor "q": unsupported type 3`,
		`tensor "k": rows of 100 elements are not whole q4_K blocks of 256`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to say %s", err, want)
		}
	}
}

// A tensor that fails to fill aborts the write and leaves the destination
// as it was: an earlier file stays whole and no temp file remains.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	w := NewWriter()
	w.String("general.architecture", "llama")
	w.AddTensor(Tensor{Name: "a", Shape: []int{3}, Type: F32, Fill: func([]byte) error { return nil }})
	w.AddTensor(Tensor{Name: "b", Shape: []int{3}, Type: F32, Fill: func([]byte) error { return boom }})
	if err := w.WriteFile(path); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the fill's error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("destination changed to %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d files left in the directory, want only the old one", len(entries))
	}
}

// nearestInt is round-half-to-even over the range quantizers use.
func TestNearestInt(t *testing.T) {
	for _, f := range []float32{0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 3.7, -3.7, 63.5, -128.5, 4194302.5} {
		if got, want := nearestInt(f), int(math.RoundToEven(float64(f))); got != want {
			t.Errorf("nearestInt(%v) = %d, want %d", f, got, want)
		}
	}
}
