package safetensors

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestOpenModelSingleFile(t *testing.T) {
	dir := t.TempDir()
	tensors := testTensors()
	if err := WriteModel(dir, tensors, WriteOptions{DType: F32}); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{SingleFileName}) {
		t.Fatalf("dir = %v, want only %s", names, SingleFileName)
	}
	m, err := OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.Files()) != 1 || m.Files()[0].Metadata()["format"] != "pt" {
		t.Errorf("single file metadata = %v", m.Files()[0].Metadata())
	}
	for _, tn := range tensors {
		got := make([]float32, len(tn.Data))
		if err := m.Float32(tn.Name, got); err != nil {
			t.Fatal(err)
		}
		if i := bitsEqual(got, tn.Data); i >= 0 {
			t.Errorf("%s element %d differs", tn.Name, i)
		}
	}
}

func TestOpenModelErrors(t *testing.T) {
	// One valid shard holding tensor "a"; each case writes its own index.
	shard := rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4))
	tests := []struct {
		name  string
		index string // "" = no index at all
		kind  error
		want  []string
	}{
		{"no weights", "", ErrNotFound, []string{"neither"}},
		{"bad JSON", `{"weight_map": {"a": `, ErrFormat, []string{IndexFileName, "not valid JSON"}},
		{"wrong types", `{"weight_map": ["a"]}`, ErrFormat, []string{IndexFileName, "not valid JSON"}},
		{"empty weight_map", `{"metadata":{},"weight_map":{}}`, ErrFormat, []string{"no weight_map"}},
		{"missing shard", `{"weight_map":{"a":"s1.safetensors","b":"model-00002-of-00002.safetensors"}}`, ErrNotFound,
			[]string{`tensor "b"`, `shard "model-00002-of-00002.safetensors"`, "missing"}},
		{"tensor absent from shard", `{"weight_map":{"a":"s1.safetensors","ghost":"s1.safetensors"}}`, ErrNotFound,
			[]string{`tensor "ghost"`, `"s1.safetensors"`, "absent"}},
		{"parent escape", `{"weight_map":{"a":"../s1.safetensors"}}`, ErrUnsafePath, []string{`tensor "a"`, `"../s1.safetensors"`}},
		{"subdirectory", `{"weight_map":{"a":"sub/s1.safetensors"}}`, ErrUnsafePath, []string{`"sub/s1.safetensors"`}},
		{"absolute", `{"weight_map":{"a":"/etc/passwd"}}`, ErrUnsafePath, []string{`"/etc/passwd"`}},
		{"backslash", `{"weight_map":{"a":"..\\s1.safetensors"}}`, ErrUnsafePath, []string{`tensor "a"`}},
		{"dotdot", `{"weight_map":{"a":".."}}`, ErrUnsafePath, []string{`".."`}},
		{"empty shard name", `{"weight_map":{"a":""}}`, ErrUnsafePath, []string{`tensor "a"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "s1.safetensors"), shard, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "sub", "s1.safetensors"), shard, 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.index != "" {
				if err := os.WriteFile(filepath.Join(dir, IndexFileName), []byte(tt.index), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m, err := OpenModel(dir)
			if err == nil {
				m.Close()
				t.Fatal("OpenModel succeeded, want error")
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q is not %v", err, tt.kind)
			}
			for _, w := range append(tt.want, dir) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A corrupt shard reports the shard's own path and the tensor at fault.
func TestOpenModelCorruptShard(t *testing.T) {
	dir := t.TempDir()
	bad := rawFile(`{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, make([]byte, 8))
	shardPath := filepath.Join(dir, "model-00001-of-00001.safetensors")
	if err := os.WriteFile(shardPath, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	idx := `{"metadata":{"total_size":16},"weight_map":{"w":"model-00001-of-00001.safetensors"}}`
	if err := os.WriteFile(filepath.Join(dir, IndexFileName), []byte(idx), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenModel(dir)
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), shardPath) || !strings.Contains(err.Error(), `tensor "w"`) {
		t.Errorf("OpenModel = %v, want truncation naming %s and tensor w", err, shardPath)
	}
}
