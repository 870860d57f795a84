package safetensors

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// rawFile builds a safetensors image by hand, independent of the writer.
func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func writeTemp(t *testing.T, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenHandCrafted(t *testing.T) {
	var data []byte
	le := binary.LittleEndian
	// "b.f32": [2,2] F32 at [0,16)
	for _, v := range []float32{1, -2.5, 0.125, 1e30} {
		data = le.AppendUint32(data, math.Float32bits(v))
	}
	// "a.bf16": [3] BF16 at [16,22): 1, -2, 0.5
	for _, h := range []uint16{0x3F80, 0xC000, 0x3F00} {
		data = le.AppendUint16(data, h)
	}
	// "c.f16": [2] F16 at [22,26): 1, 2^-24
	for _, h := range []uint16{0x3C00, 0x0001} {
		data = le.AppendUint16(data, h)
	}
	// "d.i64": [] (scalar) I64 at [26,34)
	data = le.AppendUint64(data, 42)
	// "e.empty": [0,4] F32, zero bytes at [34,34)
	header := `{"__metadata__":{"format":"pt","k":"v"},` +
		`"b.f32":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},` +
		`"a.bf16":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},` +
		`"c.f16":{"shape":[2],"dtype":"F16","data_offsets":[22,26]},` +
		`"d.i64":{"dtype":"I64","shape":[],"data_offsets":[26,34]},` +
		`"e.empty":{"dtype":"F32","shape":[0,4],"data_offsets":[34,34]}}` +
		"      " // padding, as real writers do
	path := writeTemp(t, "hand.safetensors", rawFile(header, data))

	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	if got := f.Metadata(); got["format"] != "pt" || got["k"] != "v" || len(got) != 2 {
		t.Errorf("Metadata = %v", got)
	}
	var names []string
	for _, ti := range f.Tensors() {
		names = append(names, ti.Name)
	}
	if want := []string{"a.bf16", "b.f32", "c.f16", "d.i64", "e.empty"}; !slices.Equal(names, want) {
		t.Errorf("Tensors names = %v, want %v", names, want)
	}
	info, ok := f.Info("b.f32")
	if !ok || info.DType != F32 || !slices.Equal(info.Shape, []int{2, 2}) || info.Offsets != [2]int64{0, 16} || info.NumElements() != 4 {
		t.Errorf("Info(b.f32) = %+v, %v", info, ok)
	}
	if info, _ := f.Info("d.i64"); info.NumElements() != 1 || len(info.Shape) != 0 {
		t.Errorf("scalar Info = %+v", info)
	}

	tests := []struct {
		name string
		want []float32
	}{
		{"b.f32", []float32{1, -2.5, 0.125, 1e30}},
		{"a.bf16", []float32{1, -2, 0.5}},
		{"c.f16", []float32{1, 0x1p-24}},
		{"e.empty", []float32{}},
	}
	for _, tt := range tests {
		got := make([]float32, len(tt.want))
		if err := f.Float32(tt.name, got); err != nil {
			t.Errorf("Float32(%s): %v", tt.name, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("Float32(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
	b, err := f.Bytes("d.i64")
	if err != nil || len(b) != 8 || le.Uint64(b) != 42 {
		t.Errorf("Bytes(d.i64) = %v, %v", b, err)
	}
	if cap(b) != len(b) {
		t.Errorf("Bytes cap %d exceeds len %d: appends could clobber the mapping", cap(b), len(b))
	}
}

func TestConcurrentReads(t *testing.T) {
	dir := t.TempDir()
	data := make([]float32, 5000)
	for i := range data {
		data[i] = float32(i)
	}
	path := filepath.Join(dir, "c.safetensors")
	if err := WriteFile(path, []Tensor{{Name: "x", Shape: []int{50, 100}, Data: data}}, F32, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]float32, len(data))
			if err := f.Float32("x", got); err != nil {
				errs <- err
				return
			}
			if !slices.Equal(got, data) {
				errs <- errors.New("concurrent read mismatch")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestOpenErrors(t *testing.T) {
	f32x64 := make([]byte, 256)
	tests := []struct {
		name    string
		content []byte
		kind    error
		want    []string // substrings the message must contain (besides the path)
	}{
		{"empty file", nil, ErrTruncated, []string{"0 bytes", "shorter than"}},
		{"short file", []byte{1, 2, 3, 4}, ErrTruncated, []string{"4 bytes"}},
		{"header longer than file", append(binary.LittleEndian.AppendUint64(nil, 1000), "{}"...), ErrTruncated, []string{"header length 1000", "truncated"}},
		{"huge header length", binary.LittleEndian.AppendUint64(nil, math.MaxUint64), ErrTruncated, []string{"truncated"}},
		{"bad JSON", rawFile(`{"a":`, nil), ErrFormat, []string{"not a valid JSON"}},
		{"not an object", rawFile(`[1,2]`, nil), ErrFormat, []string{"JSON object"}},
		{"null header", rawFile(`null`, nil), ErrFormat, []string{"null"}},
		{"not UTF-8", rawFile("{\"\xff\xfe\":{}}", nil), ErrFormat, []string{"UTF-8"}},
		{"bad metadata", rawFile(`{"__metadata__":{"a":1}}`, nil), ErrFormat, []string{"__metadata__"}},
		{"truncated data", rawFile(`{"model.norm.weight":{"dtype":"F32","shape":[64],"data_offsets":[0,256]}}`, f32x64[:100]),
			ErrTruncated, []string{`tensor "model.norm.weight"`, "truncated", "100-byte"}},
		{"size mismatch", rawFile(`{"model.norm.weight":{"dtype":"F32","shape":[64],"data_offsets":[0,100]}}`, f32x64),
			ErrFormat, []string{`tensor "model.norm.weight": data_offsets [0 100] do not match shape [64] of F32 (256 bytes)`}},
		{"unknown dtype", rawFile(`{"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}`, f32x64),
			ErrFormat, []string{`tensor "w"`, `unknown dtype "Q4"`}},
		{"missing dtype", rawFile(`{"w":{"shape":[1],"data_offsets":[0,4]}}`, f32x64), ErrFormat, []string{`tensor "w"`, "missing dtype"}},
		{"missing offsets", rawFile(`{"w":{"dtype":"F32","shape":[1]}}`, f32x64), ErrFormat, []string{`tensor "w"`, "data_offsets"}},
		{"three offsets", rawFile(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, f32x64), ErrFormat, []string{`tensor "w"`, "2 elements"}},
		{"reversed offsets", rawFile(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}`, f32x64), ErrFormat, []string{`tensor "w"`, "invalid data_offsets"}},
		{"negative dim", rawFile(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, f32x64), ErrFormat, []string{`tensor "w"`, "negative"}},
		{"huge shape", rawFile(`{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, f32x64), ErrFormat, []string{`tensor "w"`, "too large"}},
		{"fractional dim", rawFile(`{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, f32x64), ErrFormat, []string{`tensor "w"`}},
		{"overlap", rawFile(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}`, f32x64),
			ErrFormat, []string{`tensor "b"`, "overlap", `"a"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeTemp(t, "bad.safetensors", tt.content)
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatal("Open succeeded, want error")
			}
			msg := err.Error()
			if !strings.Contains(msg, "safetensors: "+path+": ") {
				t.Errorf("error %q does not name the file %s", msg, path)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q is not %v", msg, tt.kind)
			}
		})
	}
}

func TestOpenMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.safetensors")
	_, err := Open(path)
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Errorf("Open(missing) = %v, want ErrNotFound naming the path", err)
	}
}

func TestReadErrors(t *testing.T) {
	data := make([]byte, 8+12)
	path := writeTemp(t, "r.safetensors", rawFile(
		`{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"w":{"dtype":"F16","shape":[2,3],"data_offsets":[8,20]}}`, data))
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		kind error
		want []string
	}{
		{"unsupported dtype", func() error { return f.Float32("ids", make([]float32, 1)) }, ErrUnsupportedDType, []string{`tensor "ids"`, "I64"}},
		{"short dst", func() error { return f.Float32("w", make([]float32, 5)) }, ErrSize, []string{`tensor "w"`, "5", "6", "[2 3]"}},
		{"long dst", func() error { return f.Float32("w", make([]float32, 7)) }, ErrSize, []string{`tensor "w"`, "7", "6"}},
		{"missing Float32", func() error { return f.Float32("nope", nil) }, ErrNotFound, []string{`tensor "nope"`}},
		{"missing Bytes", func() error { _, err := f.Bytes("nope"); return err }, ErrNotFound, []string{`tensor "nope"`}},
		{"closed", func() error { f.Close(); _, err := f.Bytes("w"); return err }, ErrClosed, []string{`tensor "w"`, "closed"}},
		{"closed twice", func() error { f.Close(); return f.Float32("w", make([]float32, 6)) }, ErrClosed, []string{"closed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("error %q is not %v", err, tt.kind)
			}
			for _, w := range append(tt.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if _, ok := f.Info("nope"); ok {
		t.Error("Info(nope) reported ok")
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(rawFile(`{"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}  `, []byte{0x80, 0x3f, 0, 0xc0}))
	f.Add(rawFile(`{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"b":{"dtype":"F32","shape":[],"data_offsets":[2,6]}}`, make([]byte, 6)))
	f.Add(rawFile(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, nil))
	f.Add(rawFile(`{}`, nil))
	f.Add(rawFile(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 2)))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{'})
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := parse("fuzz.safetensors", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "safetensors: fuzz.safetensors: ") {
				t.Fatalf("error without path prefix: %v", err)
			}
			return
		}
		for _, ti := range file.Tensors() {
			raw, err := file.Bytes(ti.Name)
			if err != nil || int64(len(raw)) != ti.ByteSize() {
				t.Fatalf("Bytes(%q) = %d bytes, %v; info %v", ti.Name, len(raw), err, ti)
			}
			if ti.DType.convertible() {
				if err := file.Float32(ti.Name, make([]float32, ti.NumElements())); err != nil {
					t.Fatalf("Float32(%q): %v", ti.Name, err)
				}
			}
		}
	})
}
