// Package refdev is a deliberately simple engine.Device for tests: plain
// float32 loops on one goroutine, no cgo, no blocking, no fused tricks. The
// parity tests run the model on it as well as on engine/cpu, which proves
// the Device seam carries everything the model needs.
//
// Its buffers are opaque handles, as a GPU's would be: Alloc returns a Go
// slice whose elements the device never reads, and keeps the data in shadow
// storage that kernels find from the handle's address (a view's offset is
// its distance from the allocation's start). Code that reads a device
// buffer directly instead of through Download sees zeros; code that writes
// one directly instead of through Upload is ignored; a host slice passed to
// a kernel panics. So a model that passes the parity tests here uses only
// the seam. Importing the package registers it as "ref". Not for
// production: it is slow and single-threaded.
package refdev

import (
	"fmt"
	"sort"
	"unsafe"

	"hone/engine"
)

func init() {
	engine.RegisterDevice("ref", func(engine.DeviceOptions) (engine.Device, error) { return New(), nil })
}

// Device is the reference device. The zero value is not usable; call New.
type Device struct {
	f32 arena[float32]
	b16 arena[uint16]
	i32 arena[int32]
}

var _ engine.Device = (*Device)(nil)

// New returns an empty reference device.
func New() *Device { return &Device{} }

func (d *Device) Name() string { return "ref (pure Go, naive loops)" }

// arena maps handles to shadow storage. Allocations are kept sorted by the
// handle's address; Go's heap does not move objects, and the arena holds
// each handle, so addresses stay valid until Free.
type arena[T any] struct {
	allocs []allocation[T]
}

type allocation[T any] struct {
	base   uintptr
	handle []T // never read or written by the device
	data   []T
}

func addr[T any](x []T) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(x))) }

func (a *arena[T]) alloc(n int) []T {
	h := make([]T, max(n, 1))[:n] // one element at least, so every handle has its own address
	al := allocation[T]{base: addr(h), handle: h, data: make([]T, n)}
	i := sort.Search(len(a.allocs), func(i int) bool { return a.allocs[i].base > al.base })
	a.allocs = append(a.allocs, allocation[T]{})
	copy(a.allocs[i+1:], a.allocs[i:])
	a.allocs[i] = al
	return h
}

// find returns the index of the allocation holding address p.
func (a *arena[T]) find(p uintptr) (int, bool) {
	i := sort.Search(len(a.allocs), func(i int) bool { return a.allocs[i].base > p }) - 1
	if i < 0 {
		return 0, false
	}
	al := a.allocs[i]
	var zero T
	size := unsafe.Sizeof(zero)
	return i, p < al.base+uintptr(max(cap(al.handle), 1))*size
}

// data resolves a handle or a view of one to its shadow storage; nil stays
// nil (an absent optional operand).
func (a *arena[T]) data(x []T) []T {
	if x == nil {
		return nil
	}
	p := addr(x)
	i, ok := a.find(p)
	if !ok {
		panic(fmt.Sprintf("refdev: a %T of %d elements that this device did not allocate was passed to a kernel", x, len(x)))
	}
	al := a.allocs[i]
	var zero T
	off := int((p - al.base) / unsafe.Sizeof(zero))
	if off+len(x) > len(al.data) {
		panic(fmt.Sprintf("refdev: view [%d:%d] beyond its allocation of %d", off, off+len(x), len(al.data)))
	}
	return al.data[off : off+len(x) : off+len(x)]
}

func (a *arena[T]) free(x []T) {
	i, ok := a.find(addr(x))
	if !ok || a.allocs[i].base != addr(x) {
		panic("refdev: Free of a buffer this device did not allocate (or of a view)")
	}
	a.allocs = append(a.allocs[:i], a.allocs[i+1:]...)
}

func (d *Device) Alloc(n int) []float32     { return d.f32.alloc(n) }
func (d *Device) AllocBF16(n int) []uint16  { return d.b16.alloc(n) }
func (d *Device) AllocInt32(n int) []int32  { return d.i32.alloc(n) }
func (d *Device) Free(x []float32)          { d.f32.free(x) }
func (d *Device) FreeBF16(x []uint16)       { d.b16.free(x) }
func (d *Device) FreeInt32(x []int32)       { d.i32.free(x) }
func (d *Device) Sync()                     {}
func (d *Device) Upload(dst, src []float32) { copy(d.f32.data(dst[:len(src)]), src) }
func (d *Device) UploadInt32(dst, src []int32) {
	copy(d.i32.data(dst[:len(src)]), src)
}
func (d *Device) UploadBF16(dst, src []uint16) {
	copy(d.b16.data(dst[:len(src)]), src)
}
func (d *Device) Download(dst, src []float32) { copy(dst, d.f32.data(src[:len(dst)])) }

// AttentionScratch is 0: the naive attention keeps one score row on the
// host stack of each call, nothing that grows with the batch.
func (d *Device) AttentionScratch(b, t, nh, nkv, hd int) int64 { return 0 }

// Live is the number of buffers allocated and not freed, for leak tests.
func (d *Device) Live() int { return len(d.f32.allocs) + len(d.b16.allocs) + len(d.i32.allocs) }
