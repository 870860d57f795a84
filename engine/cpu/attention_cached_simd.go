package cpu

/*
#cgo CFLAGS: -O3
#include <math.h>

// AVX-512 attention of a few queries over the KV cache with an online
// (flash-style) softmax: keys are taken in blocks of AC_BLK, and each
// (query, head) keeps only its running max, sum and output, so memory is
// O(block) whatever the cache length. A task is one KV head and a block of
// query rows; its query heads all read the same key block while it is in
// cache. The Go loop in attention_cached.go stays the reference.

#define AC_BLK 128

#if defined(__x86_64__)
#include <immintrin.h>

#include "simd.h"

INLINE AVX512 float ac_dot(const float *a, const float *b, long n) {
	__m512 s = _mm512_setzero_ps();
	for (long e = 0; e < n; e += 16) {
		__mmask16 mk = tailmask(n - e);
		s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, a + e), _mm512_maskz_loadu_ps(mk, b + e), s);
	}
	return _mm512_reduce_add_ps(s);
}

// ac_task: rows [i0,i1) and query heads [h0,h1) of KV head kh. m and l hold
// (i1-i0)·(h1-h0) running maxima and sums.
static AVX512 void ac_task(float *out, const float *q, const float *kc, const float *vc, long start,
		long i0, long i1, long h0, long h1, long nh, long nkv, long hd, long window, long kh, float scale,
		float *m, float *l) {
	long ng = h1 - h0, nr = i1 - i0;
	float s[AC_BLK] __attribute__((aligned(64)));
	for (long x = 0; x < nr * ng; x++) { m[x] = -INFINITY; l[x] = 0; }
	for (long i = i0; i < i1; i++)
		for (long h = h0; h < h1; h++) {
			float *o = out + (i * nh + h) * hd;
			for (long e = 0; e < hd; e++) o[e] = 0;
		}
	long tlast = start + i1 - 1;
	long kfirst = window > 0 && start + i0 - window + 1 > 0 ? start + i0 - window + 1 : 0;
	for (long b0 = kfirst; b0 <= tlast; b0 += AC_BLK) {
		long b1 = b0 + AC_BLK;
		for (long i = i0; i < i1; i++) {
			long t = start + i;
			long lo = b0, hi = b1 < t + 1 ? b1 : t + 1;
			if (window > 0 && t - window + 1 > lo) lo = t - window + 1;
			if (lo >= hi) continue;
			long n = hi - lo;
			for (long h = h0; h < h1; h++) {
				const float *qi = q + (i * nh + h) * hd;
				float *o = out + (i * nh + h) * hd;
				long x = (i - i0) * ng + (h - h0);
				float bm = -INFINITY;
				for (long j = 0; j < n; j++) {
					float v = ac_dot(qi, kc + ((lo + j) * nkv + kh) * hd, hd) * scale;
					s[j] = v;
					bm = v > bm ? v : bm;
				}
				float mn = m[x] > bm ? m[x] : bm;
				if (m[x] != mn) {
					// Rescale what was summed under the old max.
					float c = m[x] == -INFINITY ? 0.0f : expf(m[x] - mn);
					__m512 cv = _mm512_set1_ps(c);
					for (long e = 0; e < hd; e += 16) {
						__mmask16 mk = tailmask(hd - e);
						_mm512_mask_storeu_ps(o + e, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, o + e), cv));
					}
					l[x] *= c;
					m[x] = mn;
				}
				__m512 sum = _mm512_setzero_ps();
				for (long j = 0; j < n; j += 16) {
					__mmask16 mk = tailmask(n - j);
					__m512 p = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + j), _mm512_set1_ps(mn)));
					p = _mm512_maskz_mov_ps(mk, p);
					sum = _mm512_add_ps(sum, p);
					_mm512_mask_storeu_ps(s + j, mk, p);
				}
				l[x] += _mm512_reduce_add_ps(sum);
				if (hd <= 128) {
					// The output row stays in registers across the block.
					__m512 acc[8];
					long nv = (hd + 15) / 16;
					for (long c = 0; c < nv; c++) acc[c] = _mm512_maskz_loadu_ps(tailmask(hd - c * 16), o + c * 16);
					for (long j = 0; j < n; j++) {
						__m512 p = _mm512_set1_ps(s[j]);
						const float *v = vc + ((lo + j) * nkv + kh) * hd;
						for (long c = 0; c < nv; c++)
							acc[c] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(tailmask(hd - c * 16), v + c * 16), acc[c]);
					}
					for (long c = 0; c < nv; c++) _mm512_mask_storeu_ps(o + c * 16, tailmask(hd - c * 16), acc[c]);
				} else {
					for (long j = 0; j < n; j++) {
						__m512 p = _mm512_set1_ps(s[j]);
						const float *v = vc + ((lo + j) * nkv + kh) * hd;
						for (long e = 0; e < hd; e += 16) {
							__mmask16 mk = tailmask(hd - e);
							_mm512_mask_storeu_ps(o + e, mk, _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(mk, v + e), _mm512_maskz_loadu_ps(mk, o + e)));
						}
					}
				}
			}
		}
	}
	for (long i = i0; i < i1; i++)
		for (long h = h0; h < h1; h++) {
			float *o = out + (i * nh + h) * hd;
			float inv = l[(i - i0) * ng + (h - h0)];
			for (long e = 0; e < hd; e++) o[e] /= inv;
		}
}

static int hone_ac_avx512(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#else
static void ac_task(float *out, const float *q, const float *kc, const float *vc, long start,
		long i0, long i1, long h0, long h1, long nh, long nkv, long hd, long window, long kh, float scale,
		float *m, float *l) {}
static int hone_ac_avx512(void) { return 0; }
#endif
*/
import "C"

import (
	"math"
	"unsafe"
)

// cachedSIMD says whether AttentionCached uses the AVX-512 kernel; tests
// turn it off to compare with the Go loop.
var cachedSIMD = cachedSIMDDefault

var cachedSIMDDefault = C.hone_ac_avx512() != 0

// Rows and query heads of one task: the block of keys a task reads is
// reused by up to cachedRows·cachedHeads (query, head) pairs.
const cachedRows, cachedHeads = 8, 8

func (d *Device) attentionCachedSIMD(out, q, kc, vc []float32, start, nq, nh, nkv, hd, window int) {
	group := nh / nkv
	T := start + nq
	_, _, _, _ = out[nq*nh*hd-1], q[nq*nh*hd-1], kc[T*nkv*hd-1], vc[T*nkv*hd-1] // bounds: fail in Go, not in C
	scale := C.float(1 / math.Sqrt(float64(hd)))
	rb := (nq + cachedRows - 1) / cachedRows
	hb := (group + cachedHeads - 1) / cachedHeads
	d.dynamic(nkv*rb*hb, func(task int) {
		kh, r, g := task/(rb*hb), task/hb%rb, task%hb
		i0, i1 := r*cachedRows, min((r+1)*cachedRows, nq)
		h0, h1 := kh*group+g*cachedHeads, kh*group+min((g+1)*cachedHeads, group)
		var m, l [cachedRows * cachedHeads]C.float
		C.ac_task((*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&q[0])),
			(*C.float)(unsafe.Pointer(&kc[0])), (*C.float)(unsafe.Pointer(&vc[0])), C.long(start),
			C.long(i0), C.long(i1), C.long(h0), C.long(h1), C.long(nh), C.long(nkv), C.long(hd), C.long(window),
			C.long(kh), scale, &m[0], &l[0])
	})
}
