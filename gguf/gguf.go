// Package gguf writes GGUF version 3 files, the model format of llama.cpp
// and ollama: a header, typed key/value metadata, tensor descriptors, then
// the tensor data, each tensor aligned to the file's alignment (32 bytes).
//
// A Writer collects metadata and tensor descriptors in memory; tensor data
// is produced by each tensor's Fill function only while WriteFile streams
// the file, so a model far larger than memory allows is written one tensor
// at a time. WriteFile replaces the destination atomically (temp file,
// fsync, rename). A Writer is not safe for concurrent use.
package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
)

// Magic starts every GGUF file ("GGUF" in little-endian order).
const Magic = 0x46554747

// Version is the GGUF version this package writes.
const Version = 3

// Alignment is the default data alignment (general.alignment unset).
const Alignment = 32

// ValueType is a metadata value's type id.
type ValueType uint32

// Metadata value types, as numbered by the GGUF specification.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

// TensorType is a ggml tensor element type.
type TensorType uint32

// The unquantized ggml types.
const (
	F32  TensorType = 0
	F16  TensorType = 1
	BF16 TensorType = 30
)

// Tensor describes one tensor. Shape is in row-major (PyTorch/NumPy)
// order, outermost first; the file stores it reversed, as ggml counts
// dimensions from the innermost. Fill writes exactly the tensor's bytes
// (little-endian, row-major) into dst.
type Tensor struct {
	Name  string
	Shape []int
	Type  TensorType
	Fill  func(dst []byte) error
}

// Bytes is the size of the tensor's data: its rows (the innermost
// dimension) stored as blocks of its type.
func (t Tensor) Bytes() int64 {
	n := int64(t.Type.RowBytes(t.Shape[len(t.Shape)-1]))
	for _, d := range t.Shape[:len(t.Shape)-1] {
		n *= int64(d)
	}
	return n
}

type kv struct {
	key string
	typ ValueType
	val any
}

// Writer accumulates a GGUF file's metadata and tensors.
type Writer struct {
	kvs     []kv
	keys    map[string]bool
	tensors []Tensor
	names   map[string]bool
	err     error
}

// NewWriter returns an empty Writer.
func NewWriter() *Writer {
	return &Writer{keys: map[string]bool{}, names: map[string]bool{}}
}

func (w *Writer) add(key string, typ ValueType, val any) {
	if w.keys[key] {
		w.err = errors.Join(w.err, fmt.Errorf("gguf: metadata key %q set twice", key))
		return
	}
	w.keys[key] = true
	w.kvs = append(w.kvs, kv{key, typ, val})
}

// Uint32 sets key to a uint32 value.
func (w *Writer) Uint32(key string, v uint32) { w.add(key, TypeUint32, v) }

// Int32 sets key to an int32 value.
func (w *Writer) Int32(key string, v int32) { w.add(key, TypeInt32, v) }

// Float32 sets key to a float32 value.
func (w *Writer) Float32(key string, v float32) { w.add(key, TypeFloat32, v) }

// Bool sets key to a bool value.
func (w *Writer) Bool(key string, v bool) { w.add(key, TypeBool, v) }

// String sets key to a string value.
func (w *Writer) String(key string, v string) { w.add(key, TypeString, v) }

// Strings sets key to an array of strings.
func (w *Writer) Strings(key string, v []string) { w.add(key, TypeArray, v) }

// Int32s sets key to an array of int32.
func (w *Writer) Int32s(key string, v []int32) { w.add(key, TypeArray, v) }

// Float32s sets key to an array of float32.
func (w *Writer) Float32s(key string, v []float32) { w.add(key, TypeArray, v) }

// AddTensor appends a tensor; tensors are written in the order added.
func (w *Writer) AddTensor(t Tensor) {
	switch {
	case w.names[t.Name]:
		w.err = errors.Join(w.err, fmt.Errorf("gguf: tensor %q added twice", t.Name))
	case t.Type.BlockSize() == 0:
		w.err = errors.Join(w.err, fmt.Errorf("gguf: tensor %q: unsupported type %d", t.Name, t.Type))
	case len(t.Shape) == 0 || len(t.Shape) > 4:
		w.err = errors.Join(w.err, fmt.Errorf("gguf: tensor %q: %d dimensions (want 1 to 4)", t.Name, len(t.Shape)))
	case t.Shape[len(t.Shape)-1]%t.Type.BlockSize() != 0:
		w.err = errors.Join(w.err, fmt.Errorf("gguf: tensor %q: rows of %d elements are not whole %v blocks of %d",
			t.Name, t.Shape[len(t.Shape)-1], t.Type, t.Type.BlockSize()))
	}
	w.names[t.Name] = true
	w.tensors = append(w.tensors, t)
}

// WriteFile writes the GGUF file to path atomically: on any error the
// destination is left as it was.
func (w *Writer) WriteFile(path string) (err error) {
	if w.err != nil {
		return w.err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("gguf: create %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err = w.write(bw); err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("gguf: sync %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("gguf: close %s: %w", path, err)
	}
	if err = os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("gguf: rename into %s: %w", path, err)
	}
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func (w *Writer) write(out io.Writer) error {
	e := &encoder{w: out}
	e.u32(Magic)
	e.u32(Version)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.kvs)))
	for _, m := range w.kvs {
		e.str(m.key)
		e.value(m.typ, m.val)
	}
	var off int64
	for _, t := range w.tensors {
		e.str(t.Name)
		e.u32(uint32(len(t.Shape)))
		for i := len(t.Shape) - 1; i >= 0; i-- {
			e.u64(uint64(t.Shape[i]))
		}
		e.u32(uint32(t.Type))
		e.u64(uint64(off))
		off += pad(t.Bytes())
	}
	e.zeros(pad(e.n) - e.n)
	for _, t := range w.tensors {
		if e.err != nil {
			return e.err
		}
		buf := make([]byte, t.Bytes())
		if err := t.Fill(buf); err != nil {
			return fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		e.bytes(buf)
		e.zeros(pad(int64(len(buf))) - int64(len(buf)))
	}
	return e.err
}

func pad(n int64) int64 { return (n + Alignment - 1) / Alignment * Alignment }

// encoder writes little-endian values, remembering the first error and the
// number of bytes written (for alignment).
type encoder struct {
	w   io.Writer
	n   int64
	err error
	b   [8]byte
}

func (e *encoder) bytes(p []byte) {
	if e.err != nil {
		return
	}
	var n int
	n, e.err = e.w.Write(p)
	e.n += int64(n)
}

func (e *encoder) u32(v uint32) { binary.LittleEndian.PutUint32(e.b[:4], v); e.bytes(e.b[:4]) }
func (e *encoder) u64(v uint64) { binary.LittleEndian.PutUint64(e.b[:8], v); e.bytes(e.b[:8]) }
func (e *encoder) str(s string) { e.u64(uint64(len(s))); e.bytes([]byte(s)) }
func (e *encoder) zeros(n int64) {
	if n > 0 {
		e.bytes(make([]byte, n))
	}
}

func (e *encoder) value(typ ValueType, v any) {
	e.u32(uint32(typ))
	switch x := v.(type) {
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case bool:
		b := byte(0)
		if x {
			b = 1
		}
		e.bytes([]byte{b})
	case string:
		e.str(x)
	case []string:
		e.u32(uint32(TypeString))
		e.u64(uint64(len(x)))
		for _, s := range x {
			e.str(s)
		}
	case []int32:
		e.u32(uint32(TypeInt32))
		e.u64(uint64(len(x)))
		for _, i := range x {
			e.u32(uint32(i))
		}
	case []float32:
		e.u32(uint32(TypeFloat32))
		e.u64(uint64(len(x)))
		for _, f := range x {
			e.u32(math.Float32bits(f))
		}
	default:
		e.err = fmt.Errorf("gguf: unsupported metadata value %T", v)
	}
}
