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

// Q6_K rows: 6-bit values (4 low bits in ql, 2 high in qh, offset 32) in
// 16-element groups with int8 scales, times the super-block's d.
static void dot_q6_k(const uint8_t *w, long rowBytes, const float *x, long cols, float *y, long o0, long o1, int acc) {
	long nb = cols / 256;
	const __m512i m15 = _mm512_set1_epi32(15), m3 = _mm512_set1_epi32(3), off = _mm512_set1_epi32(32);
	for (long o = o0; o < o1; o++) {
		const uint8_t *b = w + o * rowBytes;
		__m512 sum = _mm512_setzero_ps();
		for (long i = 0; i < nb; i++, b += 210) {
			const uint8_t *ql = b, *qh = b + 128;
			const int8_t *sc = (const int8_t *)(b + 192);
			float d = h2f(b + 208);
			const float *xb = x + 256 * i;
			for (int n = 0; n < 2; n++) {
				for (int h = 0; h < 2; h++) {
					int l = 16 * h;
					__m512i lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ql + 64 * n + l)));
					__m512i lo2 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ql + 64 * n + l + 32)));
					__m512i hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qh + 32 * n + l)));
					__m512i q1 = _mm512_or_si512(_mm512_and_si512(lo, m15), _mm512_slli_epi32(_mm512_and_si512(hi, m3), 4));
					__m512i q2 = _mm512_or_si512(_mm512_and_si512(lo2, m15), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hi, 2), m3), 4));
					__m512i q3 = _mm512_or_si512(_mm512_srli_epi32(lo, 4), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hi, 4), m3), 4));
					__m512i q4 = _mm512_or_si512(_mm512_srli_epi32(lo2, 4), _mm512_slli_epi32(_mm512_srli_epi32(hi, 6), 4));
					const float *xn = xb + 128 * n + l;
					const int8_t *s = sc + 8 * n + h;
					__m512 t = _mm512_mul_ps(_mm512_set1_ps(d * s[0]), _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q1, off)), _mm512_loadu_ps(xn)));
					t = _mm512_fmadd_ps(_mm512_set1_ps(d * s[2]), _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q2, off)), _mm512_loadu_ps(xn + 32)), t);
					t = _mm512_fmadd_ps(_mm512_set1_ps(d * s[4]), _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q3, off)), _mm512_loadu_ps(xn + 64)), t);
					t = _mm512_fmadd_ps(_mm512_set1_ps(d * s[6]), _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q4, off)), _mm512_loadu_ps(xn + 96)), t);
					sum = _mm512_add_ps(sum, t);
				}
			}
		}
		float s = _mm512_reduce_add_ps(sum);
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
	case Q6_K:
		C.dot_q6_k(w, C.long(m.rowBytes), (*C.float)(&x[0]), C.long(m.Cols), (*C.float)(&y[0]), C.long(o0), C.long(o1), a)
	case Q4_K:
		C.dot_q4_k(w, C.long(m.rowBytes), (*C.float)(&x[0]), (*C.float)(&xs[0]), C.long(m.Cols), (*C.float)(&y[0]), C.long(o0), C.long(o1), a)
	}
}
