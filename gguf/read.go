package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
)

// File is an opened GGUF file: its metadata and tensor descriptors are
// read at Open; tensor data is read on demand.
type File struct {
	f       *os.File
	path    string
	Meta    map[string]any // uint8..float64, bool, string, or a slice of one of them
	Tensors []TensorInfo
	byName  map[string]int
	data    int64 // offset of the tensor data
}

// TensorInfo describes a tensor of a File. Shape is row-major (outermost
// first), the reverse of the file's order.
type TensorInfo struct {
	Name   string
	Shape  []int
	Type   TensorType
	Offset int64 // from the start of the tensor data
}

// Elements is the number of elements of the tensor.
func (t TensorInfo) Elements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Bytes is the size of the tensor's data.
func (t TensorInfo) Bytes() int64 { return Tensor{Shape: t.Shape, Type: t.Type}.Bytes() }

// Open reads the header of the GGUF file at path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	g := &File{f: f, path: path, Meta: map[string]any{}, byName: map[string]int{}}
	if err := g.readHeader(); err != nil {
		f.Close()
		return nil, fmt.Errorf("gguf: %s: %w", path, err)
	}
	return g, nil
}

// Close closes the file.
func (g *File) Close() error { return g.f.Close() }

// Tensor is the descriptor of the tensor called name.
func (g *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := g.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return g.Tensors[i], true
}

// Raw reads the tensor's data as stored.
func (g *File) Raw(t TensorInfo) ([]byte, error) {
	buf := make([]byte, t.Bytes())
	if _, err := g.f.ReadAt(buf, g.data+t.Offset); err != nil {
		return nil, fmt.Errorf("gguf: %s: read tensor %s: %w", g.path, t.Name, err)
	}
	return buf, nil
}

// Float32 reads the tensor called name, dequantized, into a new slice.
func (g *File) Float32(name string) ([]float32, TensorInfo, error) {
	t, ok := g.Tensor(name)
	if !ok {
		return nil, t, fmt.Errorf("gguf: %s: no tensor %q", g.path, name)
	}
	raw, err := g.Raw(t)
	if err != nil {
		return nil, t, err
	}
	out := make([]float32, t.Elements())
	Dequantize(t.Type, out, raw, t.Shape[len(t.Shape)-1])
	return out, t, nil
}

// Float32Rows reads rows [r0, r1) of tensor t, viewed as rows of its
// innermost dimension, dequantized into dst ((r1-r0)·cols values): a part
// of a large tensor without the rest of it in memory.
func (g *File) Float32Rows(t TensorInfo, dst []float32, r0, r1 int) error {
	cols := t.Shape[len(t.Shape)-1]
	if r0 < 0 || r1 < r0 || r1*cols > t.Elements() || len(dst) < (r1-r0)*cols {
		return fmt.Errorf("gguf: %s: rows [%d, %d) of tensor %s (%v) into %d values", g.path, r0, r1, t.Name, t.Shape, len(dst))
	}
	rb := int64(t.Type.RowBytes(cols))
	raw := make([]byte, int64(r1-r0)*rb)
	if _, err := g.f.ReadAt(raw, g.data+t.Offset+int64(r0)*rb); err != nil {
		return fmt.Errorf("gguf: %s: read rows [%d, %d) of tensor %s: %w", g.path, r0, r1, t.Name, err)
	}
	Dequantize(t.Type, dst[:(r1-r0)*cols], raw, cols)
	return nil
}

// String is the string metadata value of key ("" when absent).
func (g *File) String(key string) string { s, _ := g.Meta[key].(string); return s }

// Uint is an integer metadata value of key (any width; false when absent).
func (g *File) Uint(key string) (uint64, bool) {
	switch v := g.Meta[key].(type) {
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	case int32:
		return uint64(v), v >= 0
	case int64:
		return uint64(v), v >= 0
	}
	return 0, false
}

type decoder struct {
	r   *bufio.Reader
	n   int64
	err error
}

func (d *decoder) read(p []byte) {
	if d.err != nil {
		return
	}
	var n int
	n, d.err = io.ReadFull(d.r, p)
	d.n += int64(n)
}

func (d *decoder) u8() uint8   { var b [1]byte; d.read(b[:]); return b[0] }
func (d *decoder) u16() uint16 { var b [2]byte; d.read(b[:]); return binary.LittleEndian.Uint16(b[:]) }
func (d *decoder) u32() uint32 { var b [4]byte; d.read(b[:]); return binary.LittleEndian.Uint32(b[:]) }
func (d *decoder) u64() uint64 { var b [8]byte; d.read(b[:]); return binary.LittleEndian.Uint64(b[:]) }

func (d *decoder) str() string {
	n := d.u64()
	if d.err == nil && n > 1<<30 {
		d.err = fmt.Errorf("string of %d bytes", n)
	}
	if d.err != nil {
		return ""
	}
	b := make([]byte, n)
	d.read(b)
	return string(b)
}

func (d *decoder) value(t ValueType) any {
	switch t {
	case TypeUint8:
		return d.u8()
	case TypeInt8:
		return int8(d.u8())
	case TypeUint16:
		return d.u16()
	case TypeInt16:
		return int16(d.u16())
	case TypeUint32:
		return d.u32()
	case TypeInt32:
		return int32(d.u32())
	case TypeFloat32:
		return math.Float32frombits(d.u32())
	case TypeBool:
		return d.u8() != 0
	case TypeString:
		return d.str()
	case TypeUint64:
		return d.u64()
	case TypeInt64:
		return int64(d.u64())
	case TypeFloat64:
		return math.Float64frombits(d.u64())
	case TypeArray:
		et := ValueType(d.u32())
		n := d.u64()
		if d.err == nil && n > 1<<28 {
			d.err = fmt.Errorf("array of %d values", n)
		}
		if d.err != nil {
			return nil
		}
		switch et {
		case TypeString:
			out := make([]string, n)
			for i := range out {
				out[i] = d.str()
			}
			return out
		case TypeInt32:
			out := make([]int32, n)
			for i := range out {
				out[i] = int32(d.u32())
			}
			return out
		case TypeFloat32:
			out := make([]float32, n)
			for i := range out {
				out[i] = math.Float32frombits(d.u32())
			}
			return out
		}
		out := make([]any, n)
		for i := range out {
			out[i] = d.value(et)
		}
		return out
	}
	if d.err == nil {
		d.err = fmt.Errorf("unknown metadata value type %d", t)
	}
	return nil
}

func (g *File) readHeader() error {
	d := &decoder{r: bufio.NewReaderSize(g.f, 1<<20)}
	if m := d.u32(); d.err == nil && m != Magic {
		return fmt.Errorf("not a GGUF file (magic %#x)", m)
	}
	if v := d.u32(); d.err == nil && v != 2 && v != 3 {
		return fmt.Errorf("GGUF version %d (want 2 or 3)", v)
	}
	nt, nkv := d.u64(), d.u64()
	if d.err == nil && (nt > 1<<20 || nkv > 1<<20) {
		return fmt.Errorf("%d tensors, %d metadata keys: corrupt header", nt, nkv)
	}
	for i := uint64(0); i < nkv && d.err == nil; i++ {
		key := d.str()
		g.Meta[key] = d.value(ValueType(d.u32()))
	}
	for i := uint64(0); i < nt && d.err == nil; i++ {
		t := TensorInfo{Name: d.str()}
		nd := d.u32()
		if d.err == nil && (nd == 0 || nd > 4) {
			return fmt.Errorf("tensor %s: %d dimensions", t.Name, nd)
		}
		t.Shape = make([]int, nd)
		for j := int(nd) - 1; j >= 0; j-- {
			t.Shape[j] = int(d.u64())
		}
		t.Type = TensorType(d.u32())
		t.Offset = int64(d.u64())
		if d.err == nil && t.Type.BlockSize() == 0 {
			return fmt.Errorf("tensor %s: ggml type %d is not supported (hone reads f32, f16, bf16, q4_0, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K)", t.Name, t.Type)
		}
		if d.err == nil && t.Shape[nd-1]%t.Type.BlockSize() != 0 {
			return fmt.Errorf("tensor %s: rows of %d are not whole %v blocks", t.Name, t.Shape[nd-1], t.Type)
		}
		g.byName[t.Name] = len(g.Tensors)
		g.Tensors = append(g.Tensors, t)
	}
	if d.err != nil {
		return fmt.Errorf("read header: %w", d.err)
	}
	align := int64(Alignment)
	if a, ok := g.Uint("general.alignment"); ok && a > 0 {
		align = int64(a)
	}
	g.data = (d.n + align - 1) / align * align
	st, err := g.f.Stat()
	if err != nil {
		return err
	}
	for _, t := range g.Tensors {
		if end := g.data + t.Offset + t.Bytes(); end > st.Size() {
			return fmt.Errorf("tensor %s ends at byte %d, past the end of the file (%d bytes): truncated", t.Name, end, st.Size())
		}
	}
	return nil
}
