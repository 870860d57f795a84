package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
)

// Tensor is a tensor to write: its values in Data, or, when Fill is set
// (and Data nil), produced by Fill as the file is written, a chunk at a
// time: Fill(dst, off) writes the values [off, off+len(dst)) in row-major
// order into dst. A model can so be written without holding its tensors.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
	Fill  func(dst []float32, off int) error
}

// numel is the number of values t writes.
func (t Tensor) numel() int {
	if t.Fill == nil {
		return len(t.Data)
	}
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// DefaultMaxShardBytes matches transformers' default max_shard_size of 5GB.
const DefaultMaxShardBytes = 5 << 30

// WriteOptions controls WriteModel.
type WriteOptions struct {
	DType         DType             // default BF16
	MaxShardBytes int64             // tensor bytes per shard; 0 = DefaultMaxShardBytes
	Metadata      map[string]string // __metadata__ of every file; "format":"pt" is added
}

// validate checks tensors against dtype before anything touches disk.
func validate(path string, tensors []Tensor, dt DType) error {
	if !dt.convertible() {
		return newErr(path, "", ErrUnsupportedDType, "cannot write dtype %q (only F32, BF16, F16)", dt)
	}
	seen := make(map[string]bool, len(tensors))
	for _, t := range tensors {
		switch {
		case t.Name == "":
			return newErr(path, "", ErrFormat, "tensor with empty name")
		case t.Name == "__metadata__":
			return newErr(path, t.Name, ErrFormat, "reserved tensor name")
		case seen[t.Name]:
			return newErr(path, t.Name, ErrFormat, "duplicate tensor name")
		}
		seen[t.Name] = true
		n := 1
		for _, d := range t.Shape {
			if d < 0 {
				return newErr(path, t.Name, ErrSize, "negative dimension in shape %v", t.Shape)
			}
			n *= d
		}
		if t.Fill != nil && t.Data != nil {
			return newErr(path, t.Name, ErrFormat, "both Data and Fill set")
		}
		if n != t.numel() {
			return newErr(path, t.Name, ErrSize, "shape %v needs %d elements, data has %d", t.Shape, n, len(t.Data))
		}
	}
	return nil
}

// headerEntry is marshalled in field order dtype, shape, data_offsets.
type headerEntry struct {
	DType       DType    `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// encodeHeader lays tensors out in name order and returns the padded header
// (length prefix included) plus the tensors in data order.
func encodeHeader(tensors []Tensor, dt DType, metadata map[string]string) ([]byte, []Tensor, error) {
	sorted := append([]Tensor(nil), tensors...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	hdr := make(map[string]any, len(sorted)+1)
	if len(metadata) > 0 {
		hdr["__metadata__"] = metadata
	}
	var off int64
	for _, t := range sorted {
		size := int64(t.numel()) * int64(dt.Size())
		shape := t.Shape
		if shape == nil {
			shape = []int{} // scalar: "shape": [] rather than null
		}
		hdr[t.Name] = headerEntry{DType: dt, Shape: shape, DataOffsets: [2]int64{off, off + size}}
		off += size
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return nil, nil, err
	}
	// Pad with spaces so the data buffer starts 8-byte aligned, as the
	// reference writer does; aligned mappings allow zero-copy casts.
	pad := (8 - len(js)%8) % 8
	buf := make([]byte, 8, 8+len(js)+pad)
	binary.LittleEndian.PutUint64(buf, uint64(len(js)+pad))
	buf = append(buf, js...)
	for range pad {
		buf = append(buf, ' ')
	}
	return buf, sorted, nil
}

// WriteFile writes tensors converted to dtype into a single safetensors file,
// atomically. metadata becomes __metadata__ verbatim (omitted when empty).
func WriteFile(path string, tensors []Tensor, dtype DType, metadata map[string]string) error {
	if err := validate(path, tensors, dtype); err != nil {
		return err
	}
	return writeFile(path, tensors, dtype, metadata)
}

func writeFile(path string, tensors []Tensor, dt DType, metadata map[string]string) error {
	hdr, sorted, err := encodeHeader(tensors, dt, metadata)
	if err != nil {
		return &Error{Path: path, Kind: ErrFormat, Msg: "encode header", Err: err}
	}
	return writeAtomic(path, func(w io.Writer) error {
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		// Convert through a bounded buffer so writing a multi-GB model does
		// not need a second full copy in memory.
		const chunk = 4 << 20 // elements
		buf := make([]byte, chunk*dt.Size())
		var filled []float32 // Fill's chunk
		for _, t := range sorted {
			n := t.numel()
			for lo := 0; lo < n; lo += chunk {
				var src []float32
				if t.Fill == nil {
					src = t.Data[lo:min(lo+chunk, n)]
				} else {
					if filled == nil {
						filled = make([]float32, chunk)
					}
					src = filled[:min(chunk, n-lo)]
					if err := t.Fill(src, lo); err != nil {
						return fmt.Errorf("tensor %q: %w", t.Name, err)
					}
				}
				out := buf[:len(src)*dt.Size()]
				encode(out, src, dt)
				if _, err := w.Write(out); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// writeAtomic writes path via a temp file in the same directory, fsyncs it,
// renames it over path and fsyncs the directory, so readers see either the
// old or the new file, never a partial one, even after a crash.
func writeAtomic(path string, fill func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return &Error{Path: path, Kind: ErrFormat, Msg: "create temp file", Err: err}
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := fill(bw); err != nil {
		return &Error{Path: path, Kind: ErrFormat, Msg: "write", Err: err}
	}
	if err := bw.Flush(); err != nil {
		return &Error{Path: path, Kind: ErrFormat, Msg: "write", Err: err}
	}
	// CreateTemp uses 0600; weights are normally world-readable.
	if err := tmp.Chmod(0o644); err != nil {
		return &Error{Path: path, Kind: ErrFormat, Msg: "chmod", Err: err}
	}
	if err := tmp.Sync(); err != nil {
		return &Error{Path: path, Kind: ErrFormat, Msg: "fsync", Err: err}
	}
	if err := tmp.Close(); err != nil {
		return &Error{Path: path, Kind: ErrFormat, Msg: "close", Err: err}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return &Error{Path: path, Kind: ErrFormat, Msg: "rename", Err: err}
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return &Error{Path: dir, Kind: ErrFormat, Msg: "open directory", Err: err}
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return &Error{Path: dir, Kind: ErrFormat, Msg: "fsync directory", Err: err}
	}
	return nil
}

// shardRE matches the HF shard naming scheme, used to find stale shards.
var shardRE = regexp.MustCompile(`^model-\d{5}-of-\d{5}\.safetensors$`)

// ShardName is the HF name of shard i (1-based) of n.
func ShardName(i, n int) string {
	return fmt.Sprintf("model-%05d-of-%05d.safetensors", i, n)
}

// WriteModel writes tensors into dir in the Hugging Face layout: a single
// model.safetensors when the data fits in one shard, otherwise numbered
// shards plus model.safetensors.index.json. Tensors are assigned to shards in
// the given order, starting a new shard when the next tensor would exceed
// MaxShardBytes (a tensor larger than that gets a shard of its own), as
// transformers does. Files left by an earlier write that would conflict (an
// old index, single file, or extra shards) are removed afterwards.
//
// Each file is replaced atomically, but the set is not: a crash mid-write can
// leave new shards beside an old index. Shards are written first and the
// index last so a completed write is always consistent.
func WriteModel(dir string, tensors []Tensor, opt WriteOptions) error {
	dt := opt.DType
	if dt == "" {
		dt = BF16
	}
	maxBytes := opt.MaxShardBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxShardBytes
	}
	if err := validate(dir, tensors, dt); err != nil {
		return err
	}
	meta := map[string]string{"format": "pt"}
	for k, v := range opt.Metadata {
		meta[k] = v
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return &Error{Path: dir, Kind: ErrFormat, Msg: "create directory", Err: err}
	}

	shards, total := splitShards(tensors, dt, maxBytes)
	keep := map[string]bool{}
	if len(shards) == 1 {
		if err := writeFile(filepath.Join(dir, SingleFileName), shards[0], dt, meta); err != nil {
			return err
		}
		keep[SingleFileName] = true
	} else {
		idx := indexJSON{Metadata: map[string]any{"total_size": total}, WeightMap: map[string]string{}}
		for i, sh := range shards {
			name := ShardName(i+1, len(shards))
			if err := writeFile(filepath.Join(dir, name), sh, dt, meta); err != nil {
				return err
			}
			keep[name] = true
			for _, t := range sh {
				idx.WeightMap[t.Name] = name
			}
		}
		// A leftover single file would shadow the index in OpenModel and in
		// transformers, so it must go before the index appears.
		if err := removeStale(dir, []string{SingleFileName}); err != nil {
			return err
		}
		js, err := json.MarshalIndent(idx, "", "  ")
		if err != nil {
			return &Error{Path: dir, Kind: ErrFormat, Msg: "encode index", Err: err}
		}
		js = append(js, '\n')
		if err := writeAtomic(filepath.Join(dir, IndexFileName), func(w io.Writer) error {
			_, err := w.Write(js)
			return err
		}); err != nil {
			return err
		}
		keep[IndexFileName] = true
	}
	return removeOthers(dir, keep)
}

// splitShards cuts tensors, in order, into shards of at most maxBytes
// (a tensor larger than that gets a shard of its own); total is the sum.
func splitShards(tensors []Tensor, dt DType, maxBytes int64) (shards [][]Tensor, total int64) {
	var cur []Tensor
	var curBytes int64
	for _, t := range tensors {
		size := int64(t.numel()) * int64(dt.Size())
		if len(cur) > 0 && curBytes+size > maxBytes {
			shards = append(shards, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, t)
		curBytes += size
		total += size
	}
	if len(cur) > 0 || len(shards) == 0 {
		shards = append(shards, cur)
	}
	return shards, total
}

// removeOthers removes the weight files of dir (single file, index,
// shards) that a previous save left and this one did not write.
func removeOthers(dir string, keep map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return &Error{Path: dir, Kind: ErrFormat, Msg: "list directory", Err: err}
	}
	var stale []string
	for _, e := range entries {
		n := e.Name()
		if keep[n] {
			continue
		}
		if n == SingleFileName || n == IndexFileName || shardRE.MatchString(n) {
			stale = append(stale, n)
		}
	}
	return removeStale(dir, stale)
}

func removeStale(dir string, names []string) error {
	removed := false
	for _, n := range names {
		err := os.Remove(filepath.Join(dir, n))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return &Error{Path: filepath.Join(dir, n), Kind: ErrFormat, Msg: "remove stale file", Err: err}
		}
		removed = removed || err == nil
	}
	if removed {
		return syncDir(dir)
	}
	return nil
}
