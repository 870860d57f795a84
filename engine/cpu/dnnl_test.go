package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"hone/engine"
)

// naiveMatMul is the reference c = op(a)·op(b) (+ c).
func naiveMatMul(c, a, b []float32, m, n, k int, f engine.MatMulFlags) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for p := 0; p < k; p++ {
				ai, bi := i*k+p, p*n+j
				if f.TransA {
					ai = p*m + i
				}
				if f.TransB {
					bi = j*k + p
				}
				s += a[ai] * b[bi]
			}
			if f.Acc {
				s += c[i*n+j]
			}
			c[i*n+j] = s
		}
	}
}

// Every new shape makes a oneDNN primitive (serving: every prompt length).
// The cache must stay at its cap, evicting the least recently used, and
// results must stay right, also for shapes evicted and built again.
func TestPrimitiveCacheBounded(t *testing.T) {
	for _, tc := range []struct{ cap, shapes int }{{8, 40}, {0, primCacheCap + 60}} {
		t.Run(fmt.Sprint("cap", tc.cap), func(t *testing.T) {
			d, r := New(2), rand.New(rand.NewPCG(7, 8))
			d.mm.cap = tc.cap
			limit := tc.cap
			if limit == 0 {
				limit = primCacheCap
			}
			const n, k = 3, 5
			check := func(m int, f engine.MatMulFlags) {
				a, b := randSlice(r, m*k), randSlice(r, k*n)
				c, want := randSlice(r, m*n), make([]float32, m*n)
				copy(want, c)
				d.MatMul(c, a, b, m, n, k, f)
				naiveMatMul(want, a, b, m, n, k, f)
				if e := maxRel(c, want); e > 1e-5 {
					t.Fatalf("MatMul m=%d %+v: relative error %.3g", m, f, e)
				}
			}
			for m := 1; m <= tc.shapes; m++ {
				check(m, engine.MatMulFlags{TransB: m%2 == 0, Acc: m%3 == 0})
				if got := d.mm.cached(); got > limit {
					t.Fatalf("after %d shapes the cache holds %d primitives, cap %d", m, got, limit)
				}
			}
			if got := d.mm.cached(); got != limit {
				t.Fatalf("cache holds %d primitives after %d shapes, want the cap %d", got, tc.shapes, limit)
			}
			// The first shapes were evicted: they are rebuilt and still right.
			for m := 1; m <= 3; m++ {
				check(m, engine.MatMulFlags{TransB: m%2 == 0, Acc: m%3 == 0})
			}
		})
	}
}

// A shape in use stays cached while others come and go.
func TestPrimitiveCacheKeepsRecent(t *testing.T) {
	d := New(1)
	d.mm.cap = 4
	x, c := []float32{1, 2, 3, 4}, make([]float32, 4)
	hot := key2D(2, 2, 2, engine.MatMulFlags{}, false)
	for m := 1; m <= 20; m++ {
		d.MatMul(c, x, x, 2, 2, 2, engine.MatMulFlags{})
		y := make([]float32, m*2)
		d.MatMul(y, make([]float32, m*2), x, m, 2, 2, engine.MatMulFlags{})
	}
	dnnlMu.Lock()
	_, ok := d.mm.prims[hot]
	dnnlMu.Unlock()
	if !ok {
		t.Fatal("the shape used on every step was evicted")
	}
}

// AttentionScratch, which memory estimates use, is what the kernels really
// keep, whole rows and blocked alike: with the fp32 flash form what it
// alone keeps (fp32 training runs nothing else), with the oneDNN blocked
// form what it and the bf16 forms keep together (the blocked forms share
// buffers); AttentionScratchBF16 is what the bf16 forms alone keep, flash
// or not, in any pairing with the fp32 form.
func TestAttentionScratchStated(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, tc := range []struct{ B, T, nh, nkv, hd, block int }{{2, 13, 4, 2, 8, 0}, {1, 40, 4, 1, 8, 16}, {1, 1500, 4, 2, 4, 0}, {2, 200, 4, 2, 64, 0}} {
		for _, fl := range [][2]int{{0, flash32Off}, {flashISA, flash32ISA}, {flashISA, flash32Off}, {0, flash32ISA}} {
			flash, flash32 := fl[0], fl[1]
			N := tc.B * tc.T
			q, k, v := randSlice(r, N*tc.nh*tc.hd), randSlice(r, N*tc.nkv*tc.hd), randSlice(r, N*tc.nkv*tc.hd)
			docStart := make([]int32, N)
			out, lse := make([]float32, len(q)), make([]float32, N*tc.nh)
			dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
			d := New(2)
			d.attnBlock, d.flash, d.flash32 = tc.block, flash, flash32
			if flash32 != flash32Off {
				f := New(2)
				f.attnBlock, f.flash, f.flash32 = tc.block, flash, flash32
				f.Attention(out, lse, q, k, v, docStart, tc.B, tc.T, tc.nh, tc.nkv, tc.hd, 0)
				f.AttentionBackward(dq, dk, dv, out, out, lse, q, k, v, docStart, tc.B, tc.T, tc.nh, tc.nkv, tc.hd, 0)
				if got, want := f.scratchBytes(), f.AttentionScratch(tc.B, tc.T, tc.nh, tc.nkv, tc.hd); got != want {
					t.Errorf("%+v flash=%d flash32=%d: fp32 flash attention keeps %d bytes of scratch, AttentionScratch says %d", tc, flash, flash32, got, want)
				}
			}
			d.AttentionBF16(out, lse, q, k, v, docStart, tc.B, tc.T, tc.nh, tc.nkv, tc.hd, 0)
			d.AttentionBackwardBF16(dq, dk, dv, out, out, lse, q, k, v, docStart, tc.B, tc.T, tc.nh, tc.nkv, tc.hd, 0)
			if got, want := d.scratchBytes(), d.AttentionScratchBF16(tc.B, tc.T, tc.nh, tc.nkv, tc.hd); got != want {
				t.Errorf("%+v flash=%d flash32=%d: bf16 attention keeps %d bytes of scratch, AttentionScratchBF16 says %d", tc, flash, flash32, got, want)
			}
			if flash32 != flash32Off {
				continue
			}
			d.Attention(out, lse, q, k, v, docStart, tc.B, tc.T, tc.nh, tc.nkv, tc.hd, 0)
			d.AttentionBackward(dq, dk, dv, out, out, lse, q, k, v, docStart, tc.B, tc.T, tc.nh, tc.nkv, tc.hd, 0)
			if got, want := d.scratchBytes(), d.AttentionScratch(tc.B, tc.T, tc.nh, tc.nkv, tc.hd); got != want {
				t.Errorf("%+v flash=%d flash32=%d: attention keeps %d bytes of scratch, AttentionScratch says %d", tc, flash, flash32, got, want)
			}
		}
	}
}

// A bf16 product with a long inner dimension runs as slices of it
// (matMulSlices): for every operand layout it must match the float64
// product of the same bf16 values within fp32 summation's bound, also
// when k is no multiple of the slice or of 32, and add into c with Acc.
func TestMatMulBF16LongKSlices(t *testing.T) {
	d, r := New(0), rand.New(rand.NewPCG(3, 4))
	const m, n = 5, 7
	for _, k := range []int{2*kSlice + 1, 3*kSlice - 17} {
		for _, f := range []engine.MatMulFlags{{}, {TransB: true}, {Acc: true}, {TransB: true, Acc: true}} {
			a, b := make([]uint16, m*k), make([]uint16, k*n)
			for i := range a {
				a[i] = toBF16(float32(r.NormFloat64()))
			}
			for i := range b {
				b[i] = toBF16(float32(r.NormFloat64()))
			}
			c := make([]float32, m*n)
			for i := range c {
				c[i] = float32(i)
			}
			want, bound := refProduct(m, n, k, f, func(i int) float64 { return float64(bf16Value(a[i])) }, func(i int) float64 { return float64(bf16Value(b[i])) }, c)
			d.MatMulBF16(c, a, b, m, n, k, f)
			checkProduct(t, "MatMulBF16", k, f, c, want, bound)
		}
	}
}

func bf16Value(x uint16) float32 { return math.Float32frombits(uint32(x) << 16) }

// refProduct is the float64 product of a and b (values by index, in the
// layout f says), plus c's values with Acc, and fp32 summation's bound on
// each element's error: k·2⁻²⁴ of Σ|a·b| (+|c|).
func refProduct(m, n, k int, f engine.MatMulFlags, a, b func(int) float64, c []float32) (want, bound []float64) {
	want, bound = make([]float64, m*n), make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, abs float64
			for p := 0; p < k; p++ {
				bi := p*n + j
				if f.TransB {
					bi = j*k + p
				}
				x := a(i*k+p) * b(bi)
				s, abs = s+x, abs+math.Abs(x)
			}
			if f.Acc {
				s += float64(c[i*n+j])
			}
			want[i*n+j], bound[i*n+j] = s, float64(k)*0x1p-24*(abs+math.Abs(float64(c[i*n+j])))
		}
	}
	return want, bound
}

// checkProduct fails t where c is farther from want than bound.
func checkProduct(t *testing.T, name string, k int, f engine.MatMulFlags, c []float32, want, bound []float64) {
	t.Helper()
	for i, w := range want {
		if tol := bound[i]; math.Abs(float64(c[i])-w) > tol {
			t.Fatalf("%s(k=%d, %+v)[%d] = %v, want %v (±%.3g)", name, k, f, i, c[i], w, tol)
		}
	}
}

// OpenMP's thread count is per OS thread, and a goroutine's cgo calls run
// on whichever thread it is on: a device's products must run on the
// device's threads whatever the calling thread had set (a --threads 1
// rank ran some products on every core before).
func TestMatMulUsesDeviceThreads(t *testing.T) {
	for _, threads := range []int{1, 3} {
		d := New(threads)
		done := make(chan int)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			setOMPThreads(threads + 1) // what another device or OpenMP's default left on this thread
			a := make([]float32, 64*64)
			d.MatMul(make([]float32, 64*64), a, a, 64, 64, 64, engine.MatMulFlags{})
			done <- ompThreads()
		}()
		if got := <-done; got != threads {
			t.Errorf("device of %d threads: its product ran with %d OpenMP threads", threads, got)
		}
		if d.Threads() != threads {
			t.Errorf("Threads() = %d, want %d", d.Threads(), threads)
		}
	}
}

// The vector peak is measured exactly where the CPU has the instructions.
func TestPeakGFLOPs(t *testing.T) {
	d := New(1)
	for _, prec := range []string{"fp32", "bf16"} {
		g, ok := d.PeakGFLOPs(prec, time.Millisecond)
		if want := peakISA >= map[string]int{"fp32": 1, "bf16": 2}[prec]; ok != want {
			t.Fatalf("%s: ok %v, want %v (peakISA %d)", prec, ok, want, peakISA)
		}
		if ok && !(g > 0) {
			t.Errorf("%s: peak %g GFLOP/s", prec, g)
		}
	}
}

// An fp32 product with a long inner dimension (the head's input gradient,
// k = vocabulary) runs as slices of at most kSlice, as in bf16: oneDNN
// runs (256, 768, 128256) whole at about 0.75 of its 2048³ rate per CPU
// second, sliced at 0.97–1.05 (BenchmarkStepShapes). Each layout matches
// the float64 product within fp32 summation's bound, also when k is no
// multiple of the slice or of 32, and adds into c with Acc.
func TestMatMulLongKSlices(t *testing.T) {
	d, r := New(0), rand.New(rand.NewPCG(5, 6))
	const m, n = 5, 7
	for _, k := range []int{2 * kSlice, 3*kSlice - 17} {
		for _, f := range []engine.MatMulFlags{{}, {TransB: true}, {Acc: true}, {TransB: true, Acc: true}} {
			a, b, c := randSlice(r, m*k), randSlice(r, k*n), randSlice(r, m*n)
			want, bound := refProduct(m, n, k, f, func(i int) float64 { return float64(a[i]) }, func(i int) float64 { return float64(b[i]) }, c)
			d.MatMul(c, a, b, m, n, k, f)
			checkProduct(t, "MatMul", k, f, c, want, bound)
		}
	}
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	for key := range d.mm.prims {
		if key.a[1] > kSlice {
			t.Errorf("a product of k=%d ran in one oneDNN call, want slices of at most %d", key.a[1], kSlice)
		}
	}
}
