package safetensors

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// maxHeaderSize bounds the JSON header, as the reference implementation does,
// so a corrupt length cannot make us parse gigabytes of garbage.
const maxHeaderSize = 100 << 20

// File is one memory-mapped .safetensors file.
type File struct {
	path    string
	mapping []byte // whole file as mapped; nil for in-memory files (fuzzing)
	data    []byte // the data buffer that offsets are relative to
	meta    map[string]string
	infos   []TensorInfo // sorted by name
	index   map[string]int
	closed  atomic.Bool
}

// Open memory-maps path read-only and validates its header.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		kind := ErrFormat
		if os.IsNotExist(err) {
			kind = ErrNotFound
		}
		return nil, &Error{Path: path, Kind: kind, Msg: "open", Err: err}
	}
	// The mapping stays valid after the descriptor is closed.
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, &Error{Path: path, Kind: ErrFormat, Msg: "stat", Err: err}
	}
	size := st.Size()
	if size < 8 {
		return nil, newErr(path, "", ErrTruncated, "file is %d bytes, shorter than the 8-byte header length", size)
	}
	if size > math.MaxInt {
		return nil, newErr(path, "", ErrFormat, "file of %d bytes is too large to map", size)
	}
	m, err := unix.Mmap(int(fd.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, &Error{Path: path, Kind: ErrFormat, Msg: "mmap", Err: err}
	}
	f, err := parse(path, m)
	if err != nil {
		_ = unix.Munmap(m)
		return nil, err
	}
	f.mapping = m
	return f, nil
}

// parse validates a whole file image and builds the File around it. It is
// separate from Open so the fuzzer can drive it without touching disk.
func parse(path string, buf []byte) (*File, error) {
	if len(buf) < 8 {
		return nil, newErr(path, "", ErrTruncated, "file is %d bytes, shorter than the 8-byte header length", len(buf))
	}
	n := binary.LittleEndian.Uint64(buf)
	if n > uint64(len(buf)-8) {
		return nil, newErr(path, "", ErrTruncated, "header length %d exceeds the %d bytes after the length prefix: file truncated or not safetensors", n, len(buf)-8)
	}
	if n > maxHeaderSize {
		return nil, newErr(path, "", ErrFormat, "header length %d exceeds the %d-byte limit", n, maxHeaderSize)
	}
	hdr := buf[8 : 8+n]
	data := buf[8+n:]
	// encoding/json silently replaces invalid UTF-8, so check first.
	if !utf8.Valid(hdr) {
		return nil, newErr(path, "", ErrFormat, "header is not valid UTF-8")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, &Error{Path: path, Kind: ErrFormat, Msg: "header is not a valid JSON object", Err: err}
	}
	if raw == nil {
		return nil, newErr(path, "", ErrFormat, "header is JSON null, want an object")
	}
	f := &File{path: path, data: data, index: make(map[string]int, len(raw))}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &f.meta); err != nil {
				return nil, &Error{Path: path, Kind: ErrFormat, Msg: "__metadata__ must map strings to strings", Err: err}
			}
			continue
		}
		info, err := parseEntry(path, name, msg, int64(len(data)))
		if err != nil {
			return nil, err
		}
		f.infos = append(f.infos, info)
	}
	if err := checkOverlap(path, f.infos); err != nil {
		return nil, err
	}
	sort.Slice(f.infos, func(i, j int) bool { return f.infos[i].Name < f.infos[j].Name })
	for i, t := range f.infos {
		f.index[t.Name] = i
	}
	return f, nil
}

type rawEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

func parseEntry(path, name string, msg json.RawMessage, dataLen int64) (TensorInfo, error) {
	var e rawEntry
	if err := json.Unmarshal(msg, &e); err != nil {
		return TensorInfo{}, &Error{Path: path, Tensor: name, Kind: ErrFormat, Msg: "bad header entry", Err: err}
	}
	switch {
	case e.DType == nil:
		return TensorInfo{}, newErr(path, name, ErrFormat, "missing dtype")
	case e.Shape == nil:
		return TensorInfo{}, newErr(path, name, ErrFormat, "missing shape")
	case e.DataOffsets == nil:
		return TensorInfo{}, newErr(path, name, ErrFormat, "missing data_offsets")
	}
	dt := DType(*e.DType)
	if !dt.Valid() {
		return TensorInfo{}, newErr(path, name, ErrFormat, "unknown dtype %q", *e.DType)
	}
	offs := *e.DataOffsets
	if len(offs) != 2 {
		return TensorInfo{}, newErr(path, name, ErrFormat, "data_offsets %v must have 2 elements", offs)
	}
	// Count elements with overflow checks: shapes come from untrusted input.
	shape := make([]int, len(*e.Shape))
	numel := int64(1)
	for i, d := range *e.Shape {
		if d < 0 {
			return TensorInfo{}, newErr(path, name, ErrFormat, "negative dimension in shape %v", *e.Shape)
		}
		if d > 0 && numel > math.MaxInt64/8/d { // keeps numel*dtype size in int64
			return TensorInfo{}, newErr(path, name, ErrFormat, "shape %v is too large", *e.Shape)
		}
		numel *= d
		shape[i] = int(d)
	}
	want := numel * int64(dt.Size())
	begin, end := offs[0], offs[1]
	switch {
	case begin < 0 || end < begin:
		return TensorInfo{}, newErr(path, name, ErrFormat, "invalid data_offsets %v", offs)
	case end-begin != want:
		return TensorInfo{}, newErr(path, name, ErrFormat, "data_offsets %v do not match shape %v of %s (%d bytes)", offs, shape, dt, want)
	case end > dataLen:
		return TensorInfo{}, newErr(path, name, ErrTruncated, "data_offsets %v extend past the %d-byte data buffer: file truncated", offs, dataLen)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Offsets: [2]int64{begin, end}}, nil
}

// checkOverlap rejects tensors whose byte ranges overlap, which would let one
// write alias another. Gaps are tolerated to stay lenient with other writers.
func checkOverlap(path string, infos []TensorInfo) error {
	var spans []TensorInfo
	for _, t := range infos {
		if t.ByteSize() > 0 {
			spans = append(spans, t)
		}
	}
	slices.SortFunc(spans, func(a, b TensorInfo) int {
		return cmp.Or(cmp.Compare(a.Offsets[0], b.Offsets[0]), strings.Compare(a.Name, b.Name))
	})
	for i := 1; i < len(spans); i++ {
		prev, cur := spans[i-1], spans[i]
		if cur.Offsets[0] < prev.Offsets[1] {
			return newErr(path, cur.Name, ErrFormat, "data_offsets %v overlap tensor %q at %v", cur.Offsets, prev.Name, prev.Offsets)
		}
	}
	return nil
}

// Path returns the path the file was opened from.
func (f *File) Path() string { return f.path }

// Close unmaps the file. Slices from Bytes must not be used afterwards.
func (f *File) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	m := f.mapping
	f.mapping, f.data = nil, nil
	if m == nil {
		return nil
	}
	if err := unix.Munmap(m); err != nil {
		return &Error{Path: f.path, Kind: ErrFormat, Msg: "munmap", Err: err}
	}
	return nil
}

// Metadata returns a copy of the header's __metadata__ map (nil if absent).
func (f *File) Metadata() map[string]string {
	if f.meta == nil {
		return nil
	}
	out := make(map[string]string, len(f.meta))
	for k, v := range f.meta {
		out[k] = v
	}
	return out
}

// Tensors lists every tensor in the file, sorted by name.
func (f *File) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(f.infos))
	for i, t := range f.infos {
		out[i] = t.clone()
	}
	return out
}

// Info returns the named tensor's description.
func (f *File) Info(name string) (TensorInfo, bool) {
	i, ok := f.index[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.infos[i].clone(), true
}

func (f *File) lookup(name string) (TensorInfo, []byte, error) {
	if f.closed.Load() {
		return TensorInfo{}, nil, newErr(f.path, name, ErrClosed, "file is closed")
	}
	i, ok := f.index[name]
	if !ok {
		return TensorInfo{}, nil, newErr(f.path, name, ErrNotFound, "no such tensor")
	}
	t := f.infos[i]
	// Full slice expression so an append by the caller cannot spill into the
	// next tensor (and would fault anyway on a read-only mapping).
	return t, f.data[t.Offsets[0]:t.Offsets[1]:t.Offsets[1]], nil
}

// Bytes returns the tensor's raw little-endian bytes as a view into the
// mapping, valid until Close.
func (f *File) Bytes(name string) ([]byte, error) {
	_, b, err := f.lookup(name)
	return b, err
}

// Float32 converts the named F32, BF16 or F16 tensor into dst, whose length
// must equal the tensor's element count.
func (f *File) Float32(name string, dst []float32) error {
	t, b, err := f.lookup(name)
	if err != nil {
		return err
	}
	if !t.DType.convertible() {
		return newErr(f.path, name, ErrUnsupportedDType, "cannot convert dtype %s to float32 (only F32, BF16, F16)", t.DType)
	}
	if n := t.NumElements(); len(dst) != n {
		return newErr(f.path, name, ErrSize, "dst has %d elements, tensor has %d (shape %v)", len(dst), n, t.Shape)
	}
	decode(dst, b, t.DType)
	return nil
}

// String is for debugging.
func (t TensorInfo) String() string {
	return fmt.Sprintf("%s %s%v @%v", t.Name, t.DType, t.Shape, t.Offsets)
}
