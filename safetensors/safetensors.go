// Package safetensors reads and writes the safetensors tensor format used by
// Hugging Face models.
//
// A safetensors file is an 8-byte little-endian header length N, then N bytes
// of UTF-8 JSON (possibly padded with trailing spaces) describing each tensor's
// dtype, shape and data_offsets, then the data buffer. Offsets are relative to
// the start of the data buffer.
//
// Contract:
//
//   - Open memory-maps the file read-only; tensor data is never copied into RAM
//     a second time. Slices returned by Bytes are views into that mapping and
//     are valid only until Close. Touching them after Close faults.
//   - Reads (Metadata, Tensors, Info, Bytes, Float32) on a File or Model are
//     safe for concurrent use by multiple goroutines. Close must not run
//     concurrently with reads; the caller owns that ordering.
//   - Float32 converts F32, BF16 and F16 tensors; other dtypes are parsed and
//     exposed through Bytes, but Float32 refuses them with ErrUnsupportedDType.
//   - Every error is an *Error naming the file (and tensor, where one is
//     involved) and wrapping one of the sentinel errors below, so callers can
//     test with errors.Is.
//   - Writers (WriteFile, WriteModel) replace each file atomically: they write a
//     temporary file in the same directory, fsync it, rename it into place and
//     fsync the directory.
package safetensors

import (
	"errors"
	"fmt"
	"slices"
)

// DType is a safetensors element type as spelled in the header.
type DType string

// Element types. Only F32, BF16 and F16 can be converted to and from float32;
// the rest are recognised so files holding them still open.
const (
	F32    DType = "F32"
	BF16   DType = "BF16"
	F16    DType = "F16"
	F64    DType = "F64"
	I64    DType = "I64"
	I32    DType = "I32"
	I16    DType = "I16"
	I8     DType = "I8"
	U64    DType = "U64"
	U32    DType = "U32"
	U16    DType = "U16"
	U8     DType = "U8"
	Bool   DType = "BOOL"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
	F8E8M0 DType = "F8_E8M0"
	C64    DType = "C64"
)

var dtypeSizes = map[DType]int{
	F32: 4, BF16: 2, F16: 2, F64: 8,
	I64: 8, I32: 4, I16: 2, I8: 1,
	U64: 8, U32: 4, U16: 2, U8: 1,
	Bool: 1, F8E4M3: 1, F8E5M2: 1, F8E8M0: 1, C64: 8,
}

// Size returns the size in bytes of one element, or 0 for an unknown dtype.
func (d DType) Size() int { return dtypeSizes[d] }

// Valid reports whether d is a dtype this package recognises.
func (d DType) Valid() bool { return dtypeSizes[d] != 0 }

// convertible reports whether Float32 and the writers handle d.
func (d DType) convertible() bool { return d == F32 || d == BF16 || d == F16 }

// Float32Convertible reports whether values of d convert to and from
// float32 (F32, BF16, F16): the dtypes model weights can have.
func (d DType) Float32Convertible() bool { return d.convertible() }

// TensorInfo describes one tensor in a file's header.
type TensorInfo struct {
	Name    string
	DType   DType
	Shape   []int
	Offsets [2]int64 // [begin, end) relative to the data buffer
}

// NumElements is the product of Shape (1 for a scalar with empty shape).
func (t TensorInfo) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// ByteSize is the number of data bytes the tensor occupies.
func (t TensorInfo) ByteSize() int64 { return t.Offsets[1] - t.Offsets[0] }

func (t TensorInfo) clone() TensorInfo {
	t.Shape = slices.Clone(t.Shape)
	return t
}

// Sentinel errors; every *Error returned by this package wraps one of them.
var (
	// ErrNotFound: the named tensor (or a file/shard) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrFormat: the file or index is malformed.
	ErrFormat = errors.New("invalid safetensors data")
	// ErrTruncated: the file is shorter than its header claims. It also
	// matches ErrFormat.
	ErrTruncated = errors.New("file truncated")
	// ErrUnsupportedDType: the dtype cannot be converted to or from float32.
	ErrUnsupportedDType = errors.New("unsupported dtype")
	// ErrSize: a caller-provided buffer or shape does not match the data.
	ErrSize = errors.New("size mismatch")
	// ErrClosed: the File or Model was already closed.
	ErrClosed = errors.New("file closed")
	// ErrUnsafePath: an index names a shard outside the model directory.
	ErrUnsafePath = errors.New("unsafe shard path")
)

// Error is the error type of this package. Its message has the form
// "safetensors: <path>: tensor "<name>": <msg>".
type Error struct {
	Path   string // file or directory involved
	Tensor string // tensor name, if any
	Kind   error  // one of the sentinel errors
	Msg    string // human-readable detail
	Err    error  // underlying cause (os or json error), may be nil
}

func (e *Error) Error() string {
	s := "safetensors: "
	if e.Path != "" {
		s += e.Path + ": "
	}
	if e.Tensor != "" {
		s += fmt.Sprintf("tensor %q: ", e.Tensor)
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap exposes both the sentinel kind and the underlying cause.
func (e *Error) Unwrap() []error {
	errs := []error{e.Kind}
	if e.Kind == ErrTruncated {
		errs = append(errs, ErrFormat)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func newErr(path, tensor string, kind error, format string, args ...any) *Error {
	return &Error{Path: path, Tensor: tensor, Kind: kind, Msg: fmt.Sprintf(format, args...)}
}
