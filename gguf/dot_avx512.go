//go:build amd64 && cgo

package gguf

/*
#cgo CFLAGS: -O3
// Only called where the CPU has these (useAVX512); the flags go through a
// pragma because cgo refuses -mfma and -mf16c in CFLAGS.
#pragma GCC target("avx512f,avx512bw,avx512vl,fma,f16c")
#include <immintrin.h>
#include <stdint.h>

static inline float h2f(const uint8_t *p) { return _cvtsh_ss((uint16_t)(p[0] | (p[1] << 8))); }

// Q8_0 rows o0..o1: per block, the 32 int8 widened to fp32 and dotted with x,
// then scaled by the block's d. Two blocks per iteration into separate
// accumulators, so consecutive FMAs do not wait on each other.
static void dot_q8_0(const uint8_t *w, long rowBytes, const float *x, long cols, float *y, long o0, long o1, int acc) {
	long nb = cols / 32;
	for (long o = o0; o < o1; o++) {
		const uint8_t *b = w + o * rowBytes;
		__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
		long i = 0;
		for (; i + 1 < nb; i += 2, b += 68) {
			__m512 t0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2)))), _mm512_loadu_ps(x + 32 * i));
			__m512 t1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 36)))), _mm512_loadu_ps(x + 32 * i + 32));
			t0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18)))), _mm512_loadu_ps(x + 32 * i + 16), t0);
			t1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 52)))), _mm512_loadu_ps(x + 32 * i + 48), t1);
			s0 = _mm512_fmadd_ps(_mm512_set1_ps(h2f(b)), t0, s0);
			s1 = _mm512_fmadd_ps(_mm512_set1_ps(h2f(b + 34)), t1, s1);
		}
		for (; i < nb; i++, b += 34) {
			__m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2)))), _mm512_loadu_ps(x + 32 * i));
			t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18)))), _mm512_loadu_ps(x + 32 * i + 16), t);
			s0 = _mm512_fmadd_ps(_mm512_set1_ps(h2f(b)), t, s0);
		}
		float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
		y[o - o0] = acc ? y[o - o0] + s : s;
	}
}

// Q4_K rows: per 32-element group, d*scale * Σ q·x - dmin*min * Σ x (xs
// holds each group's Σ x).
static void dot_q4_k(const uint8_t *w, long rowBytes, const float *x, const float *xs, long cols, float *y, long o0, long o1, int acc) {
	long nb = cols / 256;
	const __m512i mask = _mm512_set1_epi32(15);
	for (long o = o0; o < o1; o++) {
		const uint8_t *b = w + o * rowBytes;
		__m512 sum = _mm512_setzero_ps();
		float mins = 0;
		for (long i = 0; i < nb; i++, b += 144) {
			float d = h2f(b), dmin = h2f(b + 2);
			const uint8_t *sc = b + 4, *qs = b + 16;
			const float *xb = x + 256 * i, *xsb = xs + 8 * i;
			for (int j = 0; j < 4; j++) {
				int s1, m1, s2, m2, g = 2 * j;
				if (g < 4) { s1 = sc[g] & 63; m1 = sc[g + 4] & 63; }
				else { s1 = (sc[g + 4] & 15) | ((sc[g - 4] >> 6) << 4); m1 = (sc[g + 4] >> 4) | ((sc[g] >> 6) << 4); }
				g++;
				if (g < 4) { s2 = sc[g] & 63; m2 = sc[g + 4] & 63; }
				else { s2 = (sc[g + 4] & 15) | ((sc[g - 4] >> 6) << 4); m2 = (sc[g + 4] >> 4) | ((sc[g] >> 6) << 4); }
				const uint8_t *q = qs + 32 * j;
				const float *xj = xb + 64 * j;
				__m512i b0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)q));
				__m512i b1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + 16)));
				__m512 lo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b0, mask)), _mm512_loadu_ps(xj));
				lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b1, mask)), _mm512_loadu_ps(xj + 16), lo);
				__m512 hi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b0, 4)), _mm512_loadu_ps(xj + 32));
				hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b1, 4)), _mm512_loadu_ps(xj + 48), hi);
				sum = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)s1), lo, sum);
				sum = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)s2), hi, sum);
				mins += dmin * (float)m1 * xsb[2 * j] + dmin * (float)m2 * xsb[2 * j + 1];
			}
		}
		float s = _mm512_reduce_add_ps(sum) - mins;
		y[o - o0] = acc ? y[o - o0] + s : s;
	}
}
*/
import "C"

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

var useAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL && cpu.X86.HasFMA && cpu.X86.HasF16C

func dotRowsAVX512(m *Matrix, y, x, xs []float32, o0, o1 int, acc bool) {
	a := C.int(0)
	if acc {
		a = 1
	}
	w := (*C.uint8_t)(unsafe.Pointer(&m.Data[0]))
	switch m.Type {
	case Q8_0:
		C.dot_q8_0(w, C.long(m.rowBytes), (*C.float)(&x[0]), C.long(m.Cols), (*C.float)(&y[0]), C.long(o0), C.long(o1), a)
	case Q4_K:
		C.dot_q4_k(w, C.long(m.rowBytes), (*C.float)(&x[0]), (*C.float)(&xs[0]), C.long(m.Cols), (*C.float)(&y[0]), C.long(o0), C.long(o1), a)
	}
}
