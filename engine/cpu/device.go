// Package cpu implements engine.Device on the host: matrix products through
// oneDNN (cgo, Debian libdnnl-dev), every other kernel in Go, or in C with
// AVX-512 intrinsics where the CPU has them (simd.go), split across cores. Kernels never run at the same time as a oneDNN call, so the two
// thread pools do not compete. Reductions are split by fixed blocks, not by
// thread count, so results are the same for any GOMAXPROCS.
//
// Importing the package registers the device with engine.RegisterDevice as
// "cpu"; callers open it with engine.OpenDevice.
package cpu

import (
	"math"
	"runtime"
	"sync"
	"unsafe"

	"hone/engine"
)

// Device is the CPU backend. The zero value is not usable; call New.
type Device struct {
	threads int
	mm      matmuls
	bufs    [][]float32 // kernel scratch, see scratch
	bufs16  [][]uint16  // bf16 kernel scratch, see scratch16

	kSlice32  int // fp32 products' longest k in one oneDNN call (kSlice; 0 = no limit)
	attnBlock int // query block of Attention; 0 = chosen by size
	flash     int // bf16 attention: flashISA's values (a field, so tests pick the path)
	flash32   int // fp32 attention: flash32ISA's values
}

var (
	_ engine.Device     = (*Device)(nil)
	_ engine.HostMemory = (*Device)(nil)
)

func init() {
	engine.RegisterDevice("cpu", func(o engine.DeviceOptions) (engine.Device, error) { return New(o.Threads), nil })
}

// New returns a CPU device using up to threads goroutines for Go kernels
// and threads OpenMP threads for its oneDNN products (0 = GOMAXPROCS).
func New(threads int) *Device {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	return &Device{threads: threads, mm: matmuls{threads: threads}, kSlice32: kSlice, flash: flashISA, flash32: flash32ISA}
}

// Threads is how many threads the device's kernels and products use.
func (d *Device) Threads() int { return d.threads }

func (d *Device) Name() string { return "cpu (oneDNN matmul)" }

// Buffers are Go memory: Alloc is make, Free leaves them to the garbage
// collector, and the copies are copy. Kernels run synchronously.
func (d *Device) Alloc(n int) []float32        { return make([]float32, n) }
func (d *Device) AllocBF16(n int) []uint16     { return make([]uint16, n) }
func (d *Device) AllocInt32(n int) []int32     { return make([]int32, n) }
func (d *Device) Free([]float32)               {}
func (d *Device) FreeBF16([]uint16)            {}
func (d *Device) FreeInt32([]int32)            {}
func (d *Device) Upload(dst, src []float32)    { copy(dst[:len(src)], src) }
func (d *Device) UploadInt32(dst, src []int32) { copy(dst[:len(src)], src) }
func (d *Device) UploadBF16(dst, src []uint16) { copy(dst[:len(src)], src) }
func (d *Device) Download(dst, src []float32)  { copy(dst, src[:len(dst)]) }
func (d *Device) Sync()                        {}

// HostMemory reports that buffers are host memory, so loading and saving
// weights read and fill them in place.
func (d *Device) HostMemory() bool { return true }

// MatMul runs on oneDNN in fp32.
func (d *Device) MatMul(c, a, b []float32, m, n, k int, f engine.MatMulFlags) {
	if m == 0 || n == 0 || k == 0 {
		if !f.Acc {
			clear(c[:m*n])
		}
		return
	}
	_, _ = a[m*k-1], b[k*n-1] // bounds: fail in Go, not in C
	_ = c[m*n-1]
	if d.kSlice32 > 0 && k >= 2*d.kSlice32 && !f.TransA {
		matMulSlices(d, c, a, b, m, n, k, d.kSlice32, f)
		return
	}
	d.mm.run(key2D(m, n, k, f, false), unsafe.Pointer(&c[0]), unsafe.Pointer(&a[0]), unsafe.Pointer(&b[0]))
}

// parallel splits [0,n) into contiguous ranges, one per worker, and waits.
func (d *Device) parallel(n int, fn func(lo, hi int)) {
	w := min(d.threads, n)
	if w <= 1 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	for i := 0; i < w; i++ {
		lo, hi := i*n/w, (i+1)*n/w
		wg.Add(1)
		go func() { defer wg.Done(); fn(lo, hi) }()
	}
	wg.Wait()
}

// blocks is the fixed reduction granularity that keeps sums deterministic.
const blocks = 1 << 14

func (d *Device) Copy(dst, src []float32) { copy(dst[:len(src)], src) }

func (d *Device) Zero(x []float32) {
	d.parallel((len(x)+blocks-1)/blocks, func(lo, hi int) { clear(x[lo*blocks : min(hi*blocks, len(x))]) })
}

func (d *Device) SumSquares(x []float32) float64 {
	nb := (len(x) + blocks - 1) / blocks
	part := make([]float64, nb)
	d.parallel(nb, func(lo, hi int) {
		if simd {
			simdSumSquares(part, x, lo, hi)
			return
		}
		for b := lo; b < hi; b++ {
			var s float64
			for _, v := range x[b*blocks : min((b+1)*blocks, len(x))] {
				s += float64(v) * float64(v)
			}
			part[b] = s
		}
	})
	var s float64
	for _, p := range part {
		s += p
	}
	return s
}

func (d *Device) Embedding(out []float32, ids []int32, table []float32, n, dim int) {
	d.parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			id := int(ids[i])
			copy(out[i*dim:(i+1)*dim], table[id*dim:(id+1)*dim])
		}
	})
}

// EmbeddingBF16 widens bf16 rows exactly: bf16 is the top half of an fp32.
func (d *Device) EmbeddingBF16(out []float32, ids []int32, table []uint16, n, dim int) {
	d.parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			id := int(ids[i])
			row, dst := table[id*dim:(id+1)*dim], out[i*dim:(i+1)*dim]
			if simd {
				simdWiden(dst[:len(row)], row)
				continue
			}
			for j, h := range row {
				dst[j] = math.Float32frombits(uint32(h) << 16)
			}
		}
	})
}

// EmbeddingBackward splits by columns so tokens sharing an id never race.
func (d *Device) EmbeddingBackward(dtable []float32, ids []int32, dout []float32, n, dim int) {
	d.parallel(dim, func(lo, hi int) {
		for i := 0; i < n; i++ {
			id := int(ids[i])
			row, src := dtable[id*dim+lo:id*dim+hi], dout[i*dim+lo:i*dim+hi]
			if simd {
				simdAddRows(row, src[:len(row)], 1, 0, 0, len(row))
				continue
			}
			for j := range row {
				row[j] += src[j]
			}
		}
	})
}

func (d *Device) AddBias(y, b []float32, n, dim int) {
	if simd && n > 0 && dim > 0 {
		_, _ = y[n*dim-1], b[dim-1]
		d.parallel(n, func(lo, hi int) { simdAddRows(y[lo*dim:], b, hi-lo, dim, 0, dim) })
		return
	}
	d.parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := y[i*dim : (i+1)*dim]
			for j := range row {
				row[j] += b[j]
			}
		}
	})
}

func (d *Device) BiasBackward(db, dy []float32, n, dim int) {
	if simd && n > 0 && dim > 0 {
		_, _ = dy[n*dim-1], db[dim-1]
		// Whole vectors of columns per thread; rows added in order, as below.
		d.parallel((dim+15)/16, func(lo, hi int) {
			lo, hi = lo*16, min(hi*16, dim)
			simdAddRows(db[lo:hi], dy[lo:], n, 0, dim, hi-lo)
		})
		return
	}
	d.parallel(dim, func(lo, hi int) {
		for i := 0; i < n; i++ {
			src := dy[i*dim+lo : i*dim+hi]
			dst := db[lo:hi]
			for j := range dst {
				dst[j] += src[j]
			}
		}
	})
}

// MatMulBF16 runs on oneDNN: AMX or AVX-512 BF16 where the CPU has them.
func (d *Device) MatMulBF16(c []float32, a, b []uint16, m, n, k int, f engine.MatMulFlags) {
	if m == 0 || n == 0 || k == 0 {
		if !f.Acc {
			clear(c[:m*n])
		}
		return
	}
	_, _, _ = a[m*k-1], b[k*n-1], c[m*n-1]
	if k >= 2*kSlice && !f.TransA {
		matMulSlices(d, c, a, b, m, n, k, kSlice, f)
		return
	}
	d.mm.run(key2D(m, n, k, f, true), unsafe.Pointer(&c[0]), unsafe.Pointer(&a[0]), unsafe.Pointer(&b[0]))
}

// kSlice is the longest inner dimension a product runs in one oneDNN
// call. oneDNN runs the output head's input gradient (256, 768, 32000) in
// bf16 at about 2/3 the rate of the same product cut into 4000-long
// slices added up (TestTrainShapeRates, HONE_SHAPES=1), so longer ones are
// cut; in fp32 (256, 768, 128256) at 0.73 of the 2048³ product's rate
// against 0.9 and more for the step's other shapes (BenchmarkStepShapes).
const kSlice = 4096

// matMulSlices is MatMulBF16 (a, b bf16) or MatMul (fp32) over slices of
// k of equal length at most slice (a multiple of 32, the last one
// shorter), each added into c after the first. Each slice sums in fp32 as
// one call does; the slices' fp32 sums are then added in order: a
// regrouping of the same fp32 sum, within its usual bound (k·2⁻²⁴ of
// Σ|a·b|).
func matMulSlices[T uint16 | float32](d *Device, c []float32, a, b []T, m, n, k, slice int, f engine.MatMulFlags) {
	var zero T
	b16 := unsafe.Sizeof(zero) == 2
	parts := (k + slice - 1) / slice
	step := ((k+parts-1)/parts + 31) &^ 31
	for k0 := 0; k0 < k; k0 += step {
		kk := min(step, k-k0)
		key := key2D(m, n, kk, engine.MatMulFlags{TransB: f.TransB, Acc: f.Acc || k0 > 0}, b16)
		key.as = [4]int{k, 1} // a's rows stay k long
		bo := k0 * n          // b(k,n): rows k0..
		if f.TransB {
			key.bs, bo = [4]int{1, k}, k0 // b stored (n,k): columns k0..
		}
		d.mm.run(key, unsafe.Pointer(&c[0]), unsafe.Pointer(&a[k0]), unsafe.Pointer(&b[bo]))
	}
}

// ToBF16 rounds to nearest even; NaN stays NaN.
func (d *Device) ToBF16(dst []uint16, src []float32) {
	d.parallel((len(src)+blocks-1)/blocks, func(lo, hi int) {
		lo, hi = lo*blocks, min(hi*blocks, len(src))
		s, o := src[lo:hi], dst[lo:hi]
		o = o[:len(s)]
		if simd {
			simdToBF16(o, s)
			return
		}
		for i, v := range s {
			o[i] = toBF16(v)
		}
	})
}

func toBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}
