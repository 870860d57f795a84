package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// specials covers values whose bits must survive an F32 round trip.
var specials = []float32{
	0, float32(math.Copysign(0, -1)), 1, -1, math.MaxFloat32, math.SmallestNonzeroFloat32,
	f32(0x007FFFFF), float32(math.Inf(1)), float32(math.Inf(-1)), f32(0x7FC00001), f32(0xFFA00000), 3.14159, -65519.9,
}

func bitsEqual(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

func TestWriteFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	big := make([]float32, 3*37)
	for i := range big {
		big[i] = float32(i)*1.0001 - 40
	}
	tensors := []Tensor{
		{Name: "z.specials", Shape: []int{len(specials)}, Data: specials},
		{Name: "a.matrix", Shape: []int{3, 37}, Data: big},
		{Name: "m.scalar", Shape: nil, Data: []float32{0.3}},
		{Name: "e.empty", Shape: []int{0, 5}, Data: nil},
	}
	for _, dt := range []DType{F32, BF16, F16} {
		t.Run(string(dt), func(t *testing.T) {
			path := filepath.Join(dir, string(dt)+".safetensors")
			meta := map[string]string{"format": "pt", "note": "x"}
			if err := WriteFile(path, tensors, dt, meta); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if n := binary.LittleEndian.Uint64(raw); n%8 != 0 {
				t.Errorf("header length %d not padded to 8", n)
			}
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if m := f.Metadata(); m["note"] != "x" || m["format"] != "pt" {
				t.Errorf("Metadata = %v", m)
			}
			for _, tn := range tensors {
				info, ok := f.Info(tn.Name)
				if !ok || info.DType != dt || info.NumElements() != len(tn.Data) || len(info.Shape) != len(tn.Shape) {
					t.Fatalf("Info(%s) = %+v, %v", tn.Name, info, ok)
				}
				got := make([]float32, len(tn.Data))
				if err := f.Float32(tn.Name, got); err != nil {
					t.Fatal(err)
				}
				want := make([]float32, len(tn.Data))
				for i, v := range tn.Data {
					switch dt {
					case F32:
						want[i] = v
					case BF16:
						want[i] = BF16ToFloat32(Float32ToBF16(v))
					case F16:
						want[i] = F16ToFloat32(Float32ToF16(v))
					}
				}
				if i := bitsEqual(got, want); i >= 0 {
					t.Errorf("%s element %d: got %#08x want %#08x", tn.Name, i, math.Float32bits(got[i]), math.Float32bits(want[i]))
				}
			}
		})
	}
}

func TestWriteFileErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		tensors []Tensor
		dtype   DType
		kind    error
		want    string
	}{
		{"shape mismatch", []Tensor{{Name: "w", Shape: []int{2, 2}, Data: make([]float32, 3)}}, F32, ErrSize, `tensor "w": shape [2 2] needs 4 elements, data has 3`},
		{"duplicate", []Tensor{{Name: "w", Data: []float32{1}}, {Name: "w", Data: []float32{1}}}, F32, ErrFormat, `tensor "w": duplicate`},
		{"empty name", []Tensor{{Data: []float32{1}}}, F32, ErrFormat, "empty name"},
		{"reserved name", []Tensor{{Name: "__metadata__", Data: []float32{1}}}, F32, ErrFormat, "reserved"},
		{"bad dtype", []Tensor{{Name: "w", Data: []float32{1}}}, I64, ErrUnsupportedDType, `"I64"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "x.safetensors")
			err := WriteFile(path, tt.tensors, tt.dtype, nil)
			if err == nil || !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("WriteFile = %v, want %v containing %q and the path", err, tt.kind, tt.want)
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("failed write left %s behind", path)
			}
		})
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("failed writes left files: %v", entries)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func testTensors() []Tensor {
	var ts []Tensor
	// 7 tensors of 16..112 floats in a non-sorted order, as a state dict
	// would list them.
	for i, name := range []string{"model.embed_tokens.weight", "model.layers.0.w", "model.layers.1.w", "model.layers.10.w", "model.layers.2.w", "model.norm.weight", "lm_head.weight"} {
		n := 16 * (i + 1)
		d := make([]float32, n)
		for j := range d {
			d[j] = float32(i*1000+j) / 7
		}
		d[0] = specials[i%len(specials)]
		ts = append(ts, Tensor{Name: name, Shape: []int{n / 4, 4}, Data: d})
	}
	return ts
}

func TestWriteModelSharded(t *testing.T) {
	dir := t.TempDir()
	tensors := testTensors()
	var total int64
	for _, tn := range tensors {
		total += int64(len(tn.Data) * 4)
	}
	// Tensor sizes are 64..448 bytes; a 500-byte cap forces several shards.
	err := WriteModel(dir, tensors, WriteOptions{DType: F32, MaxShardBytes: 500, Metadata: map[string]string{"who": "hone"}})
	if err != nil {
		t.Fatal(err)
	}
	names := dirNames(t, dir)
	var shards []string
	for _, n := range names {
		if shardRE.MatchString(n) {
			shards = append(shards, n)
		}
	}
	if len(shards) < 3 || slices.Contains(names, SingleFileName) || !slices.Contains(names, IndexFileName) {
		t.Fatalf("dir has %v, want several shards + index and no single file", names)
	}
	n := len(shards)
	for i, s := range shards {
		if s != ShardName(i+1, n) {
			t.Errorf("shard %d named %s, want %s", i, s, ShardName(i+1, n))
		}
	}

	raw, err := os.ReadFile(filepath.Join(dir, IndexFileName))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Metadata  map[string]json.Number `json:"metadata"`
		WeightMap map[string]string      `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	if got := idx.Metadata["total_size"].String(); got != "1792" || total != 1792 {
		t.Errorf("total_size = %s (computed %d), want 1792", got, total)
	}
	if len(idx.WeightMap) != len(tensors) {
		t.Errorf("weight_map has %d entries, want %d", len(idx.WeightMap), len(tensors))
	}
	// Each shard's data stays within the cap unless it holds a single tensor.
	for _, s := range shards {
		f, err := Open(filepath.Join(dir, s))
		if err != nil {
			t.Fatal(err)
		}
		var size int64
		for _, ti := range f.Tensors() {
			size += ti.ByteSize()
			if idx.WeightMap[ti.Name] != s {
				t.Errorf("%s is in %s but the index says %s", ti.Name, s, idx.WeightMap[ti.Name])
			}
		}
		if size > 500 && len(f.Tensors()) > 1 {
			t.Errorf("shard %s holds %d bytes over the 500-byte cap", s, size)
		}
		if m := f.Metadata(); m["format"] != "pt" || m["who"] != "hone" {
			t.Errorf("shard %s metadata = %v", s, m)
		}
		f.Close()
	}

	m, err := OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := len(m.Tensors()); got != len(tensors) {
		t.Fatalf("OpenModel lists %d tensors, want %d", got, len(tensors))
	}
	if !slices.IsSortedFunc(m.Tensors(), func(a, b TensorInfo) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("Model.Tensors not sorted")
	}
	for _, tn := range tensors {
		info, ok := m.Info(tn.Name)
		if !ok || !slices.Equal(info.Shape, tn.Shape) {
			t.Errorf("Info(%s) = %+v, %v", tn.Name, info, ok)
		}
		got := make([]float32, len(tn.Data))
		if err := m.Float32(tn.Name, got); err != nil {
			t.Fatal(err)
		}
		if i := bitsEqual(got, tn.Data); i >= 0 {
			t.Errorf("%s element %d differs after sharded round trip", tn.Name, i)
		}
	}
	if err := m.Float32("nope", nil); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("Model.Float32(nope) = %v", err)
	}
}

func TestWriteModelReplacesStale(t *testing.T) {
	dir := t.TempDir()
	tensors := testTensors()
	write := func(max int64) {
		t.Helper()
		if err := WriteModel(dir, tensors, WriteOptions{DType: BF16, MaxShardBytes: max}); err != nil {
			t.Fatal(err)
		}
	}
	unrelated := filepath.Join(dir, "config.json")
	if err := os.WriteFile(unrelated, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}

	write(100) // many shards
	many := len(dirNames(t, dir))
	write(700) // fewer shards: the extra old ones must go
	names := dirNames(t, dir)
	if len(names) >= many {
		t.Errorf("after resharding dir still has %d entries (%v), had %d", len(names), names, many)
	}
	// Every remaining shard must belong to the new "of N" set.
	count := countShards(names)
	for _, n := range names {
		if !shardRE.MatchString(n) {
			continue
		}
		var i, of int
		if _, err := fmt.Sscanf(n, "model-%05d-of-%05d.safetensors", &i, &of); err != nil || of != count || i > of {
			t.Errorf("stale shard %s left behind in %v", n, names)
		}
	}
	if !slices.Contains(names, "config.json") {
		t.Error("unrelated config.json was removed")
	}

	write(0) // default cap: single file; index and shards must go
	names = dirNames(t, dir)
	if want := []string{"config.json", SingleFileName}; !slices.Equal(names, want) {
		t.Errorf("after single-file write dir has %v, want %v", names, want)
	}
	m, err := OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Tensors()) != len(tensors) {
		t.Errorf("single-file model has %d tensors", len(m.Tensors()))
	}
	m.Close()

	write(100) // back to shards: the single file would shadow the index
	names = dirNames(t, dir)
	if slices.Contains(names, SingleFileName) || !slices.Contains(names, IndexFileName) {
		t.Errorf("after sharded write dir has %v", names)
	}
	for _, n := range names {
		if strings.Contains(n, ".tmp-") {
			t.Errorf("temp file %s left behind", n)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, IndexFileName)); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("index mode = %v, %v; want 0644", fi.Mode(), err)
	}
}

func countShards(names []string) int {
	n := 0
	for _, s := range names {
		if shardRE.MatchString(s) {
			n++
		}
	}
	return n
}

// A tensor produced by Fill, a chunk at a time (here over several chunks,
// the last one partial), writes the bytes its values written from Data
// do, in a sharded model too; Float32At reads any range back.
func TestWriteFill(t *testing.T) {
	n := 4<<20 + 3
	big := make([]float32, n)
	for i := range big {
		big[i] = float32(i%1000) * 0.37
	}
	small := []float32{1, 2, 3, 4, 5, 6}
	var calls int
	filled := []Tensor{
		{Name: "big", Shape: []int{n}, Fill: func(dst []float32, off int) error { calls++; copy(dst, big[off:]); return nil }},
		{Name: "small", Shape: []int{2, 3}, Fill: func(dst []float32, off int) error { copy(dst, small[off:]); return nil }},
	}
	held := []Tensor{{Name: "big", Shape: []int{n}, Data: big}, {Name: "small", Shape: []int{2, 3}, Data: small}}
	for _, dt := range []DType{F32, BF16} {
		a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
		opt := WriteOptions{DType: dt, MaxShardBytes: 1 << 10}
		if err := WriteModel(a, filled, opt); err != nil {
			t.Fatal(err)
		}
		if err := WriteModel(b, held, opt); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{ShardName(1, 2), ShardName(2, 2), IndexFileName} {
			x, err := os.ReadFile(filepath.Join(a, name))
			y, _ := os.ReadFile(filepath.Join(b, name))
			if err != nil || !slices.Equal(x, y) {
				t.Errorf("%s %s: written from Fill differs from Data (%v)", dt, name, err)
			}
		}
		m, err := OpenModel(b)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]float32, 5)
		if err := m.Float32At("big", got, n-5); err != nil || !slices.Equal(got, big[n-5:]) && dt == F32 {
			t.Errorf("%s: Float32At = %v, %v; want %v", dt, got, err, big[n-5:])
		}
		if err := m.Float32At("small", got, 2); err == nil {
			t.Errorf("%s: Float32At past the end succeeded", dt)
		}
		m.Close()
	}
	if calls != 2*2 {
		t.Errorf("Fill of the big tensor called %d times, want 2 chunks per write", calls)
	}
}
