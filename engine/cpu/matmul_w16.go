package cpu

/*
#cgo CFLAGS: -O3
#include <stdint.h>
#include <string.h>

// y(m,n) (+)= x(m,k) · w(n,k)ᵀ for columns [n0,n1): fp32 activations, bf16
// weights widened exactly to fp32, fp32 fused multiply-add. Decoding reads
// every weight once per token, so it is bound by memory traffic, not
// arithmetic: bf16 weights halve the traffic and widening them costs a
// shift. Tiles of 4 rows × 4 columns read each weight row once per 4 rows
// of x and each x row once per 4 weight rows; rows are taken in panels so
// a panel of x stays in cache while the weights stream past it once.

#define PANEL 64

// The portable kernel: any CPU, the compiler's own vectorisation.
static void w16_generic(float *y, const float *x, const uint16_t *w, long m, long n0, long n1, long k, long ldy, int acc) {
	for (long i = 0; i < m; i++) {
		const float *xi = x + i * k;
		for (long j = n0; j < n1; j++) {
			const uint16_t *wj = w + j * k;
			float s = 0;
			for (long p = 0; p < k; p++) {
				uint32_t u = (uint32_t)wj[p] << 16;
				float f;
				memcpy(&f, &u, 4);
				s += xi[p] * f;
			}
			y[i * ldy + j] = acc ? y[i * ldy + j] + s : s;
		}
	}
}

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#define INLINE static inline __attribute__((always_inline))

// widen loads 16 (or, masked, fewer) bf16 values as fp32.
INLINE AVX512 __m512 widen(const uint16_t *p, __mmask16 mk) {
	__m256i h = _mm256_maskz_loadu_epi16(mk, p);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// tile computes an RM×RN block; RM and RN are constants at every call, so
// the accumulators live in registers.
INLINE AVX512 void tile(float *y, const float *x, const uint16_t *w, long k, long ldy, int acc, const int RM, const int RN) {
	__m512 s[4][4];
#pragma GCC unroll 4
	for (int i = 0; i < RM; i++)
#pragma GCC unroll 4
		for (int j = 0; j < RN; j++) s[i][j] = _mm512_setzero_ps();
	for (long p = 0; p < k; p += 16) {
		__mmask16 mk = k - p >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (k - p)) - 1);
		__m512 wv[4], xv[4];
		// The next tile's weight rows: the hardware prefetcher alone
		// leaves the four row streams waiting on memory (3x slower here).
		// A prefetch past the matrix is a hint and never faults.
#pragma GCC unroll 4
		for (int j = 0; j < RN; j++) _mm_prefetch((const char *)(w + (j + 4) * k + p), _MM_HINT_T0);
#pragma GCC unroll 4
		for (int j = 0; j < RN; j++) wv[j] = widen(w + j * k + p, mk);
#pragma GCC unroll 4
		for (int i = 0; i < RM; i++) xv[i] = _mm512_maskz_loadu_ps(mk, x + i * k + p);
#pragma GCC unroll 4
		for (int i = 0; i < RM; i++)
#pragma GCC unroll 4
			for (int j = 0; j < RN; j++) s[i][j] = _mm512_fmadd_ps(xv[i], wv[j], s[i][j]);
	}
#pragma GCC unroll 4
	for (int i = 0; i < RM; i++)
#pragma GCC unroll 4
		for (int j = 0; j < RN; j++) {
			float v = _mm512_reduce_add_ps(s[i][j]);
			y[i * ldy + j] = acc ? y[i * ldy + j] + v : v;
		}
}

// rows runs the tiles of up to 4 rows of x over columns [n0,n1).
INLINE AVX512 void rows(float *y, const float *x, const uint16_t *w, long n0, long n1, long k, long ldy, int acc, const int RM) {
	long j = n0;
	for (; j + 4 <= n1; j += 4) tile(y + j, x, w + j * k, k, ldy, acc, RM, 4);
	for (; j < n1; j++) tile(y + j, x, w + j * k, k, ldy, acc, RM, 1);
}

static AVX512 void w16_avx512(float *y, const float *x, const uint16_t *w, long m, long n0, long n1, long k, long ldy, int acc) {
	for (long i0 = 0; i0 < m; i0 += PANEL) {
		long i1 = i0 + PANEL < m ? i0 + PANEL : m;
		for (long c0 = n0; c0 < n1; c0 += 4) {
			long c1 = c0 + 4 < n1 ? c0 + 4 : n1;
			long i = i0;
			for (; i + 4 <= i1; i += 4) rows(y + i * ldy, x + i * k, w, c0, c1, k, ldy, acc, 4);
			switch (i1 - i) {
			case 3: rows(y + i * ldy, x + i * k, w, c0, c1, k, ldy, acc, 3); break;
			case 2: rows(y + i * ldy, x + i * k, w, c0, c1, k, ldy, acc, 2); break;
			case 1: rows(y + i * ldy, x + i * k, w, c0, c1, k, ldy, acc, 1); break;
			}
		}
	}
}

static int hone_w16_avx512(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
#else
static void w16_avx512(float *y, const float *x, const uint16_t *w, long m, long n0, long n1, long k, long ldy, int acc) {}
static int hone_w16_avx512(void) { return 0; }
#endif

static void hone_w16(float *y, const float *x, const uint16_t *w, long m, long n0, long n1, long k, long ldy, int acc, int simd) {
	if (simd) w16_avx512(y, x, w, m, n0, n1, k, ldy, acc);
	else w16_generic(y, x, w, m, n0, n1, k, ldy, acc);
}
*/
import "C"

import (
	"sync/atomic"
	"unsafe"
)

// w16SIMD says whether MatMulW16 uses the AVX-512 kernel; tests turn it off
// to check the portable one.
var w16SIMD = C.hone_w16_avx512() != 0

// w16ChunkBytes is about how many weight bytes one task of MatMulW16
// reads: small enough that a thread the OS leaves waiting holds up little
// work (the machine may be shared), big enough that a cgo call is noise.
const w16ChunkBytes = 64 << 10

// MatMulW16 computes c(m,n) = a(m,k)·bᵀ, or adds it into c with acc, for
// bf16 weights b stored (n,k): widened exactly to fp32, multiplied and
// summed in fp32. Columns are cut into chunks that the device's threads
// take as they come free.
func (d *Device) MatMulW16(c, a []float32, b []uint16, m, n, k int, acc bool) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		if !acc {
			clear(c[:m*n])
		}
		return
	}
	_, _, _ = a[m*k-1], b[n*k-1], c[m*n-1] // bounds: fail in Go, not in C
	simd := cbool(w16SIMD)
	// Whole 4-column tiles per chunk.
	cols := max(4, (w16ChunkBytes/(2*k*max(1, m/4)))&^3)
	d.dynamic((n+cols-1)/cols, func(i int) {
		C.hone_w16((*C.float)(unsafe.Pointer(&c[0])), (*C.float)(unsafe.Pointer(&a[0])), (*C.uint16_t)(unsafe.Pointer(&b[0])),
			C.long(m), C.long(i*cols), C.long(min((i+1)*cols, n)), C.long(k), C.long(n), cbool(acc), simd)
	})
}

// dynamic runs fn(0) .. fn(tasks-1) on up to d.threads goroutines, the
// caller's included, each taking the next task when it is free, and waits
// for all of them. A goroutine that starts late finds nothing left and
// touches nothing, so the caller never waits on one that has no task.
func (d *Device) dynamic(tasks int, fn func(i int)) {
	if d.threads <= 1 || tasks <= 1 {
		for i := range tasks {
			fn(i)
		}
		return
	}
	var next, done atomic.Int64
	fin := make(chan struct{})
	work := func() {
		for {
			i := next.Add(1) - 1
			if i >= int64(tasks) {
				return
			}
			fn(int(i))
			if done.Add(1) == int64(tasks) {
				close(fin)
			}
		}
	}
	for range min(d.threads, tasks) - 1 {
		go work()
	}
	work()
	<-fin
}
