package cpu

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lm
// Keep a·b + c two roundings, as Go computes it on amd64 (cgo does not
// allow -ffp-contract=off as a flag).
#pragma GCC optimize("fp-contract=off")
#include <stdint.h>
#include <math.h>

// AVX-512 forms of the device's elementwise and reduction kernels. Each
// performs the Go kernel's float32 operations in the same order on 16 lanes
// at once (no fused multiply-add), so elementwise results are bit for
// bit the Go ones. Only where a reduction's order changes (sums of squares,
// dot products, softmax sums) do results differ, by rounding: the tests
// state the bound. The Go kernels stay the portable path and the reference.

#if defined(__x86_64__)
#include <immintrin.h>
#include "simd.h"

static int hone_simd_ok(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

// bf16 rounds to nearest even as toBF16: u + 0x7fff + lsb, top half; a NaN
// keeps its top half with the quiet bit set. (VCVTNEPS2BF16 would flush
// denormals, so the rounding is done on the bits.)
INLINE AVX512 __m256i bf16(__m512 x) {
	__m512i u = _mm512_castps_si512(x);
	__m512i hi = _mm512_srli_epi32(u, 16);
	__m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
		_mm512_and_si512(hi, _mm512_set1_epi32(1))), 16);
	__mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
	r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
	return _mm512_cvtepi32_epi16(r);
}

INLINE AVX512 void store16(uint16_t *dst, __m512 x, __mmask16 mk) { _mm256_mask_storeu_epi16(dst, mk, bf16(x)); }

static AVX512 void s_tobf16(uint16_t *dst, const float *src, long n) {
	for (long i = 0; i < n; i += 16) {
		__mmask16 mk = tailmask(n - i);
		store16(dst + i, _mm512_maskz_loadu_ps(mk, src + i), mk);
	}
}

// s_sumsq writes part[b] = Σ x² over block b of bs floats, for blocks
// [b0,b1) of x (n floats): squares exact in float64, summed in 16 lanes.
static AVX512 void s_sumsq(double *part, const float *x, long n, long bs, long b0, long b1) {
	for (long b = b0; b < b1; b++) {
		long lo = b * bs, hi = lo + bs < n ? lo + bs : n;
		__m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
		for (long i = lo; i < hi; i += 16) {
			__mmask16 mk = tailmask(hi - i);
			__m512 v = _mm512_maskz_loadu_ps(mk, x + i);
			__m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
			__m512d c = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
			s0 = _mm512_fmadd_pd(a, a, s0);
			s1 = _mm512_fmadd_pd(c, c, s1);
		}
		part[b] = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
	}
}

// s_adamw is the AdamW loop of adamw.go with the bf16 copy written in the
// same pass. sqrt in float32 equals float32(sqrt(float64(v))): double
// rounding is harmless for a square root of a float32.
static AVX512 void s_adamw(float *p, const float *g, float *m, float *v, uint16_t *p16, long n,
		float gs, float b1, float b2, float c1, float c2, float eps, float invbc2, float decay, float stepsize) {
	for (long i = 0; i < n; i += 16) {
		__mmask16 mk = tailmask(n - i);
		__m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, g + i), _mm512_set1_ps(gs));
		__m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(b1), _mm512_maskz_loadu_ps(mk, m + i)), _mm512_mul_ps(_mm512_set1_ps(c1), gi));
		__m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(b2), _mm512_maskz_loadu_ps(mk, v + i)),
			_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(c2), gi), gi));
		_mm512_mask_storeu_ps(m + i, mk, mi);
		_mm512_mask_storeu_ps(v + i, mk, vi);
		__m512 denom = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(vi), _mm512_set1_ps(invbc2)), _mm512_set1_ps(eps));
		__m512 pi = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, p + i), _mm512_set1_ps(decay)),
			_mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(stepsize), mi), denom));
		_mm512_mask_storeu_ps(p + i, mk, pi);
		if (p16) store16(p16 + i, pi, mk);
	}
}

// s_lionw is the LionW loop of lionw.go with the bf16 copy written in the
// same pass: lr·sign(c) is lr's bits with c's sign bit, zeroed where c is
// ±0 (a NaN c keeps its sign, as the Go loop's bit arithmetic does).
static AVX512 void s_lionw(float *p, const float *g, float *m, uint16_t *p16, long n,
		float gs, float b1, float c1, float b2, float c2, float decay, uint32_t lrbits) {
	const __m512i sign = _mm512_set1_epi32((int)0x80000000u), lr = _mm512_set1_epi32((int)lrbits);
	for (long i = 0; i < n; i += 16) {
		__mmask16 mk = tailmask(n - i);
		__m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, g + i), _mm512_set1_ps(gs));
		__m512 mi = _mm512_maskz_loadu_ps(mk, m + i);
		__m512i u = _mm512_castps_si512(_mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(b1), mi), _mm512_mul_ps(_mm512_set1_ps(c1), gi)));
		__mmask16 nz = _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x7fffffff));
		__m512i step = _mm512_maskz_or_epi32(nz, lr, _mm512_and_si512(u, sign));
		__m512 pi = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, p + i), _mm512_set1_ps(decay)), _mm512_castsi512_ps(step));
		_mm512_mask_storeu_ps(p + i, mk, pi);
		_mm512_mask_storeu_ps(m + i, mk, _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(b2), mi), _mm512_mul_ps(_mm512_set1_ps(c2), gi)));
		if (p16) store16(p16 + i, pi, mk);
	}
}

// s_swiglu: h = g/(1+e^-g)·u, and its bf16 copy in the same pass.
static AVX512 void s_swiglu(float *h, uint16_t *h16, const float *gate, const float *up, long n) {
	const __m512 one = _mm512_set1_ps(1.0f);
	for (long i = 0; i < n; i += 16) {
		__mmask16 mk = tailmask(n - i);
		__m512 g = _mm512_maskz_loadu_ps(mk, gate + i);
		__m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
		__m512 hv = _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(mk, up + i));
		_mm512_mask_storeu_ps(h + i, mk, hv);
		if (h16) store16(h16 + i, hv, mk);
	}
}

// s_swiglu_back writes dgate and dup unless NULL, and their bf16 casts in
// the same pass when dgate16 (and so dup16) is non-NULL.
static AVX512 void s_swiglu_back(float *dgate, float *dup, uint16_t *dgate16, uint16_t *dup16, const float *dh, const float *gate, const float *up, long n) {
	const __m512 one = _mm512_set1_ps(1.0f);
	for (long i = 0; i < n; i += 16) {
		__mmask16 mk = tailmask(n - i);
		__m512 g = _mm512_maskz_loadu_ps(mk, gate + i), d = _mm512_maskz_loadu_ps(mk, dh + i);
		__m512 sig = _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
		__m512 du = _mm512_mul_ps(_mm512_mul_ps(d, g), sig);
		if (dup) _mm512_mask_storeu_ps(dup + i, mk, du);
		__m512 t = _mm512_add_ps(one, _mm512_mul_ps(g, _mm512_sub_ps(one, sig)));
		__m512 dg = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, _mm512_maskz_loadu_ps(mk, up + i)), sig), t);
		if (dgate) _mm512_mask_storeu_ps(dgate + i, mk, dg);
		if (dgate16) {
			store16(dgate16 + i, dg, mk);
			store16(dup16 + i, du, mk);
		}
	}
}

// dot64 is Σ a·b·c (c may be NULL) in float64 over 8 lanes.
INLINE AVX512 double dot64(const float *a, const float *b, const float *c, long n) {
	__m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
	for (long i = 0; i < n; i += 16) {
		__mmask16 mk = tailmask(n - i);
		__m512 va = _mm512_maskz_loadu_ps(mk, a + i), vb = _mm512_maskz_loadu_ps(mk, b + i);
		__m512d a0 = _mm512_cvtps_pd(_mm512_castps512_ps256(va)), b0 = _mm512_cvtps_pd(_mm512_castps512_ps256(vb));
		__m512d a1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(va), 1)));
		__m512d b1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(vb), 1)));
		__m512d p0 = _mm512_mul_pd(a0, b0), p1 = _mm512_mul_pd(a1, b1);
		if (c) {
			__m512 vc = _mm512_maskz_loadu_ps(mk, c + i);
			p0 = _mm512_mul_pd(p0, _mm512_cvtps_pd(_mm512_castps512_ps256(vc)));
			p1 = _mm512_mul_pd(p1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(vc), 1))));
		}
		s0 = _mm512_add_pd(s0, p0);
		s1 = _mm512_add_pd(s1, p1);
	}
	return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

// s_rmsnorm does rows [lo,hi): rstd from Σx² in float64, out = x·r·w and
// its bf16 copy in one pass.
static AVX512 void s_rmsnorm(float *out, uint16_t *out16, float *rstd, const float *x, const float *w, long lo, long hi, long dim, float eps) {
	for (long r = lo; r < hi; r++) {
		const float *xr = x + r * dim;
		float *orow = out + r * dim;
		double ss = dot64(xr, xr, NULL, dim);
		float rs = (float)(1 / sqrt(ss / (double)dim + (double)eps));
		rstd[r] = rs;
		__m512 vr = _mm512_set1_ps(rs);
		for (long j = 0; j < dim; j += 16) {
			__mmask16 mk = tailmask(dim - j);
			__m512 o = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, xr + j), vr), _mm512_maskz_loadu_ps(mk, w + j));
			_mm512_mask_storeu_ps(orow + j, mk, o);
			if (out16) store16(out16 + r * dim + j, o, mk);
		}
	}
}

// s_rmsnorm_dx does rows [lo,hi) of dx += r·w·dy − k·x, and dx's bf16
// cast into dx16 when it is non-NULL.
static AVX512 void s_rmsnorm_dx(float *dx, uint16_t *dx16, const float *dout, const float *x, const float *w, const float *rstd, long lo, long hi, long dim) {
	for (long r = lo; r < hi; r++) {
		const float *xr = x + r * dim, *gr = dout + r * dim;
		float *dr = dx + r * dim;
		float rs = rstd[r];
		float k = (float)dot64(gr, w, xr, dim) * rs * rs * rs / (float)dim;
		__m512 vr = _mm512_set1_ps(rs), vk = _mm512_set1_ps(k);
		for (long j = 0; j < dim; j += 16) {
			__mmask16 mk = tailmask(dim - j);
			__m512 t = _mm512_sub_ps(_mm512_mul_ps(_mm512_mul_ps(vr, _mm512_maskz_loadu_ps(mk, w + j)), _mm512_maskz_loadu_ps(mk, gr + j)),
				_mm512_mul_ps(vk, _mm512_maskz_loadu_ps(mk, xr + j)));
			__m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, dr + j), t);
			_mm512_mask_storeu_ps(dr + j, mk, v);
			if (dx16) store16(dx16 + r * dim + j, v, mk);
		}
	}
}

// s_rmsnorm_dw does columns [lo,hi) of dw += Σ_rows dy·x·r, rows in order.
static AVX512 void s_rmsnorm_dw(float *dw, const float *dout, const float *x, const float *rstd, long n, long dim, long lo, long hi) {
	for (long j = lo; j < hi; j += 16) {
		__mmask16 mk = tailmask(hi - j);
		__m512 acc = _mm512_maskz_loadu_ps(mk, dw + j);
		for (long r = 0; r < n; r++) {
			__m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, dout + r * dim + j), _mm512_maskz_loadu_ps(mk, x + r * dim + j)),
				_mm512_set1_ps(rstd[r]));
			acc = _mm512_add_ps(acc, t);
		}
		_mm512_mask_storeu_ps(dw + j, mk, acc);
	}
}

// s_rope rotates rows [lo,hi) of x(N,heads,hd); sign −1 is the inverse.
static AVX512 void s_rope(float *x, const int32_t *pos, const float *cos, const float *sin, long lo, long hi, long heads, long hd, float sign) {
	long half = hd / 2;
	for (long i = lo; i < hi; i++) {
		const float *c = cos + (long)pos[i] * half, *s = sin + (long)pos[i] * half;
		for (long h = 0; h < heads; h++) {
			float *x1 = x + (i * heads + h) * hd, *x2 = x1 + half;
			for (long j = 0; j < half; j += 16) {
				__mmask16 mk = tailmask(half - j);
				__m512 a = _mm512_maskz_loadu_ps(mk, x1 + j), b = _mm512_maskz_loadu_ps(mk, x2 + j);
				__m512 cj = _mm512_maskz_loadu_ps(mk, c + j), sj = _mm512_mul_ps(_mm512_set1_ps(sign), _mm512_maskz_loadu_ps(mk, s + j));
				_mm512_mask_storeu_ps(x1 + j, mk, _mm512_sub_ps(_mm512_mul_ps(a, cj), _mm512_mul_ps(b, sj)));
				_mm512_mask_storeu_ps(x2 + j, mk, _mm512_add_ps(_mm512_mul_ps(b, cj), _mm512_mul_ps(a, sj)));
			}
		}
	}
}

// s_xent_row is one scored row of CrossEntropy: the arg-max (first of
// equals), Σ e^(v−max) (float32 lanes over 64-value runs, summed in
// float64), and, when out is non-NULL, scale·softmax − scale·onehot;
// out may be row itself. With out16 that gradient goes there in bf16, and
// out keeps the exponentials.
static AVX512 void s_xent_row(float *out, uint16_t *out16, const float *row, long vocab, long t, float scale, double *lossp, long *argp) {
	float lt = row[t]; // before out, which may alias row, is written
	__m512 vm = _mm512_set1_ps(-INFINITY);
	for (long j = 0; j < vocab; j += 16) {
		__mmask16 mk = tailmask(vocab - j);
		vm = _mm512_mask_max_ps(vm, mk, vm, _mm512_maskz_loadu_ps(mk, row + j));
	}
	float mx = _mm512_reduce_max_ps(vm);
	long arg = 0; // the first lane equal to the max, 16 at a time
	for (long j = 0; j < vocab; j += 16) {
		__mmask16 mk = tailmask(vocab - j);
		__mmask16 eq = _mm512_mask_cmp_ps_mask(mk, _mm512_maskz_loadu_ps(mk, row + j), _mm512_set1_ps(mx), _CMP_EQ_OQ);
		if (eq) { arg = j + __builtin_ctz(eq); break; }
	}
	if (!(row[arg] == mx)) { // NaN logits: the first value, as the Go loop
		mx = row[0];
		arg = 0;
	}
	__m512 vmx = _mm512_set1_ps(mx);
	double sum = 0;
	for (long j = 0; j < vocab; j += 64) {
		__m512 part = _mm512_setzero_ps();
		long end = j + 64 < vocab ? j + 64 : vocab;
		for (long i = j; i < end; i += 16) {
			__mmask16 mk = tailmask(end - i);
			__m512 e = _mm512_maskz_mov_ps(mk, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, row + i), vmx)));
			if (out) _mm512_mask_storeu_ps(out + i, mk, e);
			part = _mm512_add_ps(part, e);
		}
		sum += (double)_mm512_reduce_add_ps(part);
	}
	*lossp = (double)mx + log(sum) - (double)lt;
	*argp = arg;
	float fs = scale / (float)sum;
	__m512 f = _mm512_set1_ps(fs);
	if (out16) {
		for (long j = 0; j < vocab; j += 16) {
			__mmask16 mk = tailmask(vocab - j);
			store16(out16 + j, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, out + j), f), mk);
		}
		float gt = out[t] * fs - scale;
		store16(out16 + t, _mm512_set1_ps(gt), 1);
	} else if (out) {
		for (long j = 0; j < vocab; j += 16) {
			__mmask16 mk = tailmask(vocab - j);
			_mm512_mask_storeu_ps(out + j, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, out + j), f));
		}
		out[t] -= scale;
	}
}

// s_softmax_rows is softmaxBlock's row for keys [j0,j1) of row (nk
// floats): scale, max, exponentials summed in float32 lanes, normalised;
// the rest of the row zeroed. Returns the log-sum-exp.
static AVX512 float s_softmax_row(float *row, long nk, long j0, long j1, float scale) {
	__m512 vs = _mm512_set1_ps(scale), vm = _mm512_set1_ps(-INFINITY);
	for (long j = j0; j < j1; j += 16) {
		__mmask16 mk = tailmask(j1 - j);
		__m512 x = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, row + j), vs);
		_mm512_mask_storeu_ps(row + j, mk, x);
		vm = _mm512_mask_max_ps(vm, mk, vm, x);
	}
	float mx = _mm512_reduce_max_ps(vm);
	__m512 vmx = _mm512_set1_ps(mx), sum = _mm512_setzero_ps();
	for (long j = j0; j < j1; j += 16) {
		__mmask16 mk = tailmask(j1 - j);
		__m512 e = _mm512_maskz_mov_ps(mk, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, row + j), vmx)));
		_mm512_mask_storeu_ps(row + j, mk, e);
		sum = _mm512_add_ps(sum, e);
	}
	float s = _mm512_reduce_add_ps(sum);
	__m512 inv = _mm512_set1_ps(1 / s);
	for (long j = 0; j < j0; j++) row[j] = 0;
	for (long j = j0; j < j1; j += 16) {
		__mmask16 mk = tailmask(j1 - j);
		_mm512_mask_storeu_ps(row + j, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, row + j), inv));
	}
	for (long j = j1; j < nk; j++) row[j] = 0;
	return mx + (float)log((double)s);
}

// s_probs_row is probsBlock's row: e^(v·scale − lse) on [j0,j1), zeros
// elsewhere; elementwise, so bit for bit the Go loop.
static AVX512 void s_probs_row(float *row, long nk, long j0, long j1, float scale, float l) {
	__m512 vs = _mm512_set1_ps(scale), vl = _mm512_set1_ps(l);
	for (long j = 0; j < j0; j++) row[j] = 0;
	for (long j = j0; j < j1; j += 16) {
		__mmask16 mk = tailmask(j1 - j);
		__m512 x = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, row + j), vs), vl);
		_mm512_mask_storeu_ps(row + j, mk, exp16(x));
	}
	for (long j = j1; j < nk; j++) row[j] = 0;
}

// s_dscore: ds = p·(ds − dl)·scale over n values, elementwise.
static AVX512 void s_dscore(float *ds, const float *p, long n, float dl, float scale) {
	__m512 vd = _mm512_set1_ps(dl), vs = _mm512_set1_ps(scale);
	for (long j = 0; j < n; j += 16) {
		__mmask16 mk = tailmask(n - j);
		__m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, p + j), _mm512_sub_ps(_mm512_maskz_loadu_ps(mk, ds + j), vd)), vs);
		_mm512_mask_storeu_ps(ds + j, mk, t);
	}
}
// s_addrows: y[i] += x[i] over n floats (bias rows, gradient columns,
// embedding scatters), elementwise.
static AVX512 void s_addrows(float *y, const float *x, long rows, long ldy, long ldx, long n) {
	for (long r = 0; r < rows; r++) {
		float *yr = y + r * ldy;
		const float *xr = x + r * ldx;
		for (long j = 0; j < n; j += 16) {
			__mmask16 mk = tailmask(n - j);
			_mm512_mask_storeu_ps(yr + j, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, yr + j), _mm512_maskz_loadu_ps(mk, xr + j)));
		}
	}
}

// s_widen: dst = src widened from bf16 (exact).
static AVX512 void s_widen(float *dst, const uint16_t *src, long n) {
	for (long j = 0; j < n; j += 16) {
		__mmask16 mk = tailmask(n - j);
		__m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, src + j));
		_mm512_mask_storeu_ps(dst + j, mk, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
	}
}
#else
static int hone_simd_ok(void) { return 0; }
static void s_addrows(float *y, const float *x, long rows, long ldy, long ldx, long n) {}
static void s_widen(float *dst, const uint16_t *src, long n) {}
static void s_tobf16(uint16_t *dst, const float *src, long n) {}
static void s_sumsq(double *part, const float *x, long n, long bs, long b0, long b1) {}
static void s_adamw(float *p, const float *g, float *m, float *v, uint16_t *p16, long n,
		float gs, float b1, float b2, float c1, float c2, float eps, float invbc2, float decay, float stepsize) {}
static void s_lionw(float *p, const float *g, float *m, uint16_t *p16, long n,
		float gs, float b1, float c1, float b2, float c2, float decay, uint32_t lrbits) {}
static void s_swiglu(float *h, uint16_t *h16, const float *gate, const float *up, long n) {}
static void s_swiglu_back(float *dgate, float *dup, uint16_t *dgate16, uint16_t *dup16, const float *dh, const float *gate, const float *up, long n) {}
static void s_rmsnorm(float *out, uint16_t *out16, float *rstd, const float *x, const float *w, long lo, long hi, long dim, float eps) {}
static void s_rmsnorm_dx(float *dx, uint16_t *dx16, const float *dout, const float *x, const float *w, const float *rstd, long lo, long hi, long dim) {}
static void s_rmsnorm_dw(float *dw, const float *dout, const float *x, const float *rstd, long n, long dim, long lo, long hi) {}
static void s_rope(float *x, const int32_t *pos, const float *cos, const float *sin, long lo, long hi, long heads, long hd, float sign) {}
static void s_xent_row(float *out, uint16_t *out16, const float *row, long vocab, long t, float scale, double *lossp, long *argp) {}
static float s_softmax_row(float *row, long nk, long j0, long j1, float scale) { return 0; }
static void s_probs_row(float *row, long nk, long j0, long j1, float scale, float l) {}
static void s_dscore(float *ds, const float *p, long n, float dl, float scale) {}
#endif
*/
import "C"

import (
	"os"
	"unsafe"
)

// simd says whether the device's elementwise and reduction kernels run in
// the AVX-512 C forms above (chosen once from the CPU's features);
// HONE_CPU_KERNELS=go keeps the portable Go kernels (to compare speed in
// one build), and tests turn it off to compare results.
var simd = C.hone_simd_ok() != 0 && os.Getenv("HONE_CPU_KERNELS") != "go"

func fp(x []float32) *C.float {
	if len(x) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&x[0]))
}

func hp(x []uint16) *C.uint16_t {
	if len(x) == 0 {
		return nil
	}
	return (*C.uint16_t)(unsafe.Pointer(&x[0]))
}

func ip(x []int32) *C.int32_t {
	if len(x) == 0 {
		return nil
	}
	return (*C.int32_t)(unsafe.Pointer(&x[0]))
}

// The wrappers take slices their callers have bounds-checked.

func simdToBF16(dst []uint16, src []float32) { C.s_tobf16(hp(dst), fp(src), C.long(len(src))) }

func simdSumSquares(part []float64, x []float32, b0, b1 int) {
	C.s_sumsq((*C.double)(unsafe.Pointer(&part[0])), fp(x), C.long(len(x)), blocks, C.long(b0), C.long(b1))
}

func simdAdamW(p, g, m, v []float32, p16 []uint16, gs, b1, b2, c1, c2, eps, invSqrtBC2, decay, stepSize float32) {
	C.s_adamw(fp(p), fp(g), fp(m), fp(v), hp(p16), C.long(len(p)), C.float(gs), C.float(b1), C.float(b2),
		C.float(c1), C.float(c2), C.float(eps), C.float(invSqrtBC2), C.float(decay), C.float(stepSize))
}

func simdLionW(p, g, m []float32, p16 []uint16, gs, b1, c1, b2, c2, decay float32, lrBits uint32) {
	C.s_lionw(fp(p), fp(g), fp(m), hp(p16), C.long(len(p)), C.float(gs), C.float(b1), C.float(c1),
		C.float(b2), C.float(c2), C.float(decay), C.uint32_t(lrBits))
}

func simdSwiGLU(h []float32, h16 []uint16, gate, up []float32) {
	C.s_swiglu(fp(h), hp(h16), fp(gate), fp(up), C.long(len(h)))
}

func simdSwiGLUBackward(dgate, dup []float32, dgate16, dup16 []uint16, dh, gate, up []float32) {
	C.s_swiglu_back(fp(dgate), fp(dup), hp(dgate16), hp(dup16), fp(dh), fp(gate), fp(up), C.long(len(dh)))
}

func simdRMSNorm(out []float32, out16 []uint16, rstd, x, w []float32, lo, hi, dim int, eps float32) {
	C.s_rmsnorm(fp(out), hp(out16), fp(rstd), fp(x), fp(w), C.long(lo), C.long(hi), C.long(dim), C.float(eps))
}

func simdRMSNormDx(dx []float32, dx16 []uint16, dout, x, w, rstd []float32, lo, hi, dim int) {
	C.s_rmsnorm_dx(fp(dx), hp(dx16), fp(dout), fp(x), fp(w), fp(rstd), C.long(lo), C.long(hi), C.long(dim))
}

func simdRMSNormDw(dw, dout, x, rstd []float32, n, dim, lo, hi int) {
	C.s_rmsnorm_dw(fp(dw), fp(dout), fp(x), fp(rstd), C.long(n), C.long(dim), C.long(lo), C.long(hi))
}

func simdRoPE(x []float32, pos []int32, cos, sin []float32, lo, hi, heads, hd int, sign float32) {
	C.s_rope(fp(x), ip(pos), fp(cos), fp(sin), C.long(lo), C.long(hi), C.long(heads), C.long(hd), C.float(sign))
}

// simdXentRow returns the row's loss and arg-max.
func simdXentRow(out []float32, out16 []uint16, row []float32, t int, scale float32) (float64, int) {
	var loss C.double
	var arg C.long
	C.s_xent_row(fp(out), hp(out16), fp(row), C.long(len(row)), C.long(t), C.float(scale), &loss, &arg)
	return float64(loss), int(arg)
}

func simdSoftmaxRow(row []float32, j0, j1 int, scale float32) float32 {
	return float32(C.s_softmax_row(fp(row), C.long(len(row)), C.long(j0), C.long(j1), C.float(scale)))
}

func simdProbsRow(row []float32, j0, j1 int, scale, lse float32) {
	C.s_probs_row(fp(row), C.long(len(row)), C.long(j0), C.long(j1), C.float(scale), C.float(lse))
}

func simdDScore(ds, p []float32, dl, scale float32) {
	C.s_dscore(fp(ds), fp(p), C.long(len(ds)), C.float(dl), C.float(scale))
}

// simdAddRows adds row r of x (stride ldx) into row r of y (stride ldy),
// n floats each, for rows rows; the caller checks the bounds.
func simdAddRows(y, x []float32, rows, ldy, ldx, n int) {
	C.s_addrows(fp(y), fp(x), C.long(rows), C.long(ldy), C.long(ldx), C.long(n))
}

func simdWiden(dst []float32, src []uint16) { C.s_widen(fp(dst), hp(src), C.long(len(src))) }
