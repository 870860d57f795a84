// Flash attention in fp32 (attention_flash32.go): 64-query × 64-key
// blocks, online softmax, products as AVX-512F FMA register-tile kernels
// (no AMX: fp32 has no matrix-unit form here). Operands are packed per
// (row, kv head) so every product reads contiguous 64-float rows. x86-64
// only; include after <immintrin.h> and simd.h (AVX512, INLINE, exp16).
#ifndef HONE_CPU_FLASH_F32_H
#define HONE_CPU_FLASH_F32_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#define FB32 64 // query and key block

// ukr: c(mr, 16·nv) (+)= Σ_k a(i, k)·b(k, :) with a(i, k) at a[i·ars + k·acs]
// (a transposed operand is ars = 1) and b's rows ldb apart: mr·nv
// accumulators stay in registers (6×4 = 24 of the 32).
INLINE AVX512 void ukr(const int mr, const int nv, float *c, long ldc, const float *a, long ars, long acs, const float *b,
		long ldb, long K, int acc) {
	__m512 s[6][4];
	for (int i = 0; i < mr; i++)
		for (int v = 0; v < nv; v++) s[i][v] = acc ? _mm512_loadu_ps(c + i * ldc + 16 * v) : _mm512_setzero_ps();
	for (long k = 0; k < K; k++) {
		__m512 bv[4];
		for (int v = 0; v < nv; v++) bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
		for (int i = 0; i < mr; i++) {
			__m512 av = _mm512_set1_ps(a[i * ars + k * acs]);
			for (int v = 0; v < nv; v++) s[i][v] = _mm512_fmadd_ps(av, bv[v], s[i][v]);
		}
	}
	for (int i = 0; i < mr; i++)
		for (int v = 0; v < nv; v++) _mm512_storeu_ps(c + i * ldc + 16 * v, s[i][v]);
}

#define UKR_NV(mr)                                                                          \
	switch (nv) {                                                                           \
	case 4: ukr(mr, 4, c, ldc, a, ars, acs, b, ldb, K, acc); break;                         \
	case 3: ukr(mr, 3, c, ldc, a, ars, acs, b, ldb, K, acc); break;                         \
	case 2: ukr(mr, 2, c, ldc, a, ars, acs, b, ldb, K, acc); break;                         \
	default: ukr(mr, 1, c, ldc, a, ars, acs, b, ldb, K, acc); break;                        \
	}

static AVX512 void ukr_any(int mr, int nv, float *c, long ldc, const float *a, long ars, long acs, const float *b, long ldb,
		long K, int acc) {
	switch (mr) {
	case 6: UKR_NV(6) break;
	case 5: UKR_NV(5) break;
	case 4: UKR_NV(4) break;
	case 3: UKR_NV(3) break;
	case 2: UKR_NV(2) break;
	default: UKR_NV(1) break;
	}
}

// gemm32: c(M, N) (+)= a(M, K)·b(K, N), a(i, k) at a[i·ars + k·acs], b
// row-major (ldb), c row-major (ldc); N a multiple of 16.
static AVX512 void gemm32(float *c, long ldc, const float *a, long ars, long acs, const float *b, long ldb, long M, long N,
		long K, int acc) {
	for (long n = 0; n < N; n += 64) {
		int nv = (N - n) / 16 < 4 ? (int)((N - n) / 16) : 4;
		for (long m = 0; m < M; m += 6) {
			int mr = M - m < 6 ? (int)(M - m) : 6;
			ukr_any(mr, nv, c + m * ldc + n, ldc, a + m * ars, ars, acs, b + n, ldb, K, acc);
		}
	}
}

// Packings of T rows of hd floats (row stride ld) into Tp rows (a
// multiple of FB32) and hp ≥ hd columns (a multiple of 16), zero padded.

// pk_rows: [Tp][hp], the b operand of a product over keys or queries.
static void pk_rows(float *dst, const float *src, long ld, long T, long Tp, long hd, long hp, float mul) {
	for (long t = 0; t < Tp; t++)
		for (long e = 0; e < hp; e++) dst[t * hp + e] = t < T && e < hd ? src[t * ld + e] * mul : 0;
}

// pk_cols: [Tp/FB32][hp][FB32], each block transposed: the b operand of a
// product over hd (S = Q·Kᵀ, dP = dO·Vᵀ), each block contiguous.
static void pk_cols(float *dst, const float *src, long ld, long T, long Tp, long hd, long hp) {
	for (long t = 0; t < Tp; t++)
		for (long e = 0; e < hp; e++) dst[((t / FB32) * hp + e) * FB32 + t % FB32] = t < T && e < hd ? src[t * ld + e] : 0;
}

static inline long fk32(const int32_t *ds, long t, long window) {
	long s = ds[t];
	if (window > 0 && t - window + 1 > s) s = t - window + 1;
	return s;
}

// kmask32: bits [lo,hi) of a 64-key block.
static inline uint64_t kmask32(long lo, long hi) {
	if (lo < 0) lo = 0;
	if (hi > FB32) hi = FB32;
	if (lo >= hi) return 0;
	uint64_t h = hi >= 64 ? ~0ull : (1ull << hi) - 1;
	return h & ~((1ull << lo) - 1);
}

#define AL32(n) (((n) + 15) & ~15L) // float units, 64-byte multiples

// f32_fwd_ws: floats of one forward worker's workspace.
static long f32_fwd_ws(long hp, long group) { return AL32(FB32 * FB32) + group * (2 * AL32(FB32 * hp) + 2 * AL32(FB32)); }

// f32_pack packs the keys of one (row, kv head) for the forward (kind 0,
// pk_cols) and its values (kind 1, pk_rows).
static void f32_pack(int kind, float *dst, const float *src, long ld, long T, long Tp, long hd, long hp) {
	if (kind == 0) pk_cols(dst, src, ld, T, Tp, hd, hp);
	else pk_rows(dst, src, ld, T, Tp, hd, hp, 1);
}

// f32_fwd does query block [i0, i0+FB32) of the group query heads that
// share one kv head, in one row: each key block is read once for all of
// them. q, out point at the first head's first element of the row's
// first token (stride ld, heads hd apart); lse at the first head's T
// values (heads T apart); kt, vr the kv head's packed keys (pk_cols) and
// values (pk_rows); ds the row's document starts. Per query it keeps the
// running max m and sum l of e^(s−m) and rescales its output row when m
// grows, so scores exist one 64×64 block at a time.
static AVX512 void f32_fwd(float *out, float *lse, const float *q, long ld, const float *kt, const float *vr, const int32_t *ds,
		long T, long hd, long hp, long group, long window, float scale, long i0, float *ws) {
	float *s = ws, *q0 = s + AL32(FB32 * FB32), *o0 = q0 + group * AL32(FB32 * hp), *m0 = o0 + group * AL32(FB32 * hp),
		  *l0 = m0 + group * AL32(FB32);
	long rows = T - i0 < FB32 ? T - i0 : FB32;
	for (long g = 0; g < group; g++) {
		pk_rows(q0 + g * AL32(FB32 * hp), q + g * hd + i0 * ld, ld, rows, FB32, hd, hp, 1);
		memset(o0 + g * AL32(FB32 * hp), 0, FB32 * hp * 4);
		for (long r = 0; r < FB32; r++) {
			m0[g * AL32(FB32) + r] = -INFINITY;
			l0[g * AL32(FB32) + r] = 0;
		}
	}
	const __m512 vs = _mm512_set1_ps(scale);
	for (long j0 = fk32(ds, i0, window) / FB32 * FB32; j0 <= i0; j0 += FB32)
		for (long g = 0; g < group; g++) {
			float *qb = q0 + g * AL32(FB32 * hp), *o = o0 + g * AL32(FB32 * hp), *mx = m0 + g * AL32(FB32), *l = l0 + g * AL32(FB32);
			gemm32(s, FB32, qb, hp, 1, kt + j0 * hp, FB32, FB32, FB32, hp, 0);
			for (long r = 0; r < FB32; r++) {
				long t = i0 + r;
				uint64_t km = r < rows ? kmask32(fk32(ds, t, window) - j0, t - j0 + 1) : 0;
				float *sr = s + r * FB32;
				if (!km) {
					memset(sr, 0, FB32 * 4);
					continue;
				}
				__m512 x[FB32 / 16], vm = _mm512_set1_ps(-INFINITY);
				for (int c = 0; c < FB32 / 16; c++) {
					__mmask16 k = (__mmask16)(km >> (16 * c));
					x[c] = _mm512_mul_ps(_mm512_loadu_ps(sr + 16 * c), vs);
					vm = _mm512_mask_max_ps(vm, k, vm, x[c]);
				}
				float mnew = _mm512_reduce_max_ps(vm);
				if (mx[r] > mnew) mnew = mx[r];
				float alpha = mx[r] == -INFINITY ? 0 : expf(mx[r] - mnew);
				__m512 vmn = _mm512_set1_ps(mnew), sum = _mm512_setzero_ps();
				for (int c = 0; c < FB32 / 16; c++) {
					__mmask16 k = (__mmask16)(km >> (16 * c));
					__m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_sub_ps(x[c], vmn)));
					sum = _mm512_add_ps(sum, e);
					_mm512_storeu_ps(sr + 16 * c, e);
				}
				l[r] = l[r] * alpha + _mm512_reduce_add_ps(sum);
				mx[r] = mnew;
				if (alpha != 1) {
					__m512 va = _mm512_set1_ps(alpha);
					for (long e = 0; e < hp; e += 16) _mm512_storeu_ps(o + r * hp + e, _mm512_mul_ps(_mm512_loadu_ps(o + r * hp + e), va));
				}
			}
			// The key block's rows past T are zero in P and in V.
			gemm32(o, hp, s, FB32, 1, vr + j0 * hp, hp, FB32, hp, FB32, 1);
		}
	for (long g = 0; g < group; g++) {
		float *o = o0 + g * AL32(FB32 * hp), *mx = m0 + g * AL32(FB32), *l = l0 + g * AL32(FB32);
		for (long r = 0; r < rows; r++) {
			float inv = 1 / l[r];
			for (long e = 0; e < hd; e++) out[(i0 + r) * ld + g * hd + e] = o[r * hp + e] * inv;
			lse[g * T + i0 + r] = mx[r] + logf(l[r]);
		}
	}
}

// f32_bwd_ws: floats of one backward worker's workspace.
static long f32_bwd_ws(long Tp, long hp) { return 8 * AL32(Tp * hp) + 2 * AL32(Tp) + 2 * AL32(FB32 * FB32); }

// f32_bwd is the whole backward of one (row, kv head), flash-attention-2
// style: for each query head of its group, key blocks in turn, each
// against the query blocks that see it: S = Q·Kᵀ, P = e^(S·scale − lse),
// dP = dO·Vᵀ, dS = P∘(dP − δ)·scale with δ = rowsum(dO∘O), then
// dV += Pᵀ·dO, dK += dSᵀ·Q (into packed accumulators this call alone
// writes) and dQ += dS·K. dq's heads of the group, dk and dv of the kv
// head are written (not added to). Pointers are at the row's first token
// and the first head (query heads h0.., kv head).
static AVX512 void f32_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q,
		const float *k, const float *v, const int32_t *ds, long T, long qd, long kvd, long hd, long hp, long group, long window,
		float scale, float *ws) {
	long Tp = (T + FB32 - 1) / FB32 * FB32, n = AL32(Tp * hp);
	float *kt = ws, *vt = kt + n, *kr = vt + n, *qr = kr + n, *dor = qr + n, *dqa = dor + n, *dka = dqa + n, *dva = dka + n;
	float *delta = dva + n, *lv = delta + AL32(Tp), *s = lv + AL32(Tp), *dp = s + AL32(FB32 * FB32);
	pk_cols(kt, k, kvd, T, Tp, hd, hp);
	pk_cols(vt, v, kvd, T, Tp, hd, hp);
	pk_rows(kr, k, kvd, T, Tp, hd, hp, 1);
	memset(dka, 0, Tp * hp * 4);
	memset(dva, 0, Tp * hp * 4);
	const __m512 vs = _mm512_set1_ps(scale);
	for (long g = 0; g < group; g++) {
		const float *qh = q + g * hd, *doh = dout + g * hd, *oh = out + g * hd, *lh = lse + g * T;
		pk_rows(qr, qh, qd, T, Tp, hd, hp, 1);
		pk_rows(dor, doh, qd, T, Tp, hd, hp, 1);
		for (long t = 0; t < Tp; t++) {
			float acc = 0;
			if (t < T)
				for (long e = 0; e < hd; e++) acc += doh[t * qd + e] * oh[t * qd + e];
			delta[t] = acc;
			lv[t] = t < T ? lh[t] : 0;
		}
		memset(dqa, 0, Tp * hp * 4);
		for (long j0 = 0; j0 < T; j0 += FB32)
			for (long i0 = j0 / FB32 * FB32; i0 < T; i0 += FB32) {
				if (fk32(ds, i0, window) >= j0 + FB32) break; // later query blocks start later still
				gemm32(s, FB32, qr + i0 * hp, hp, 1, kt + j0 * hp, FB32, FB32, FB32, hp, 0);
				gemm32(dp, FB32, dor + i0 * hp, hp, 1, vt + j0 * hp, FB32, FB32, FB32, hp, 0);
				for (long r = 0; r < FB32; r++) {
					long t = i0 + r;
					uint64_t km = t < T ? kmask32(fk32(ds, t, window) - j0, t - j0 + 1) : 0;
					__m512 vl = _mm512_set1_ps(lv[t]), vd = _mm512_set1_ps(delta[t]);
					for (int c = 0; c < FB32 / 16; c++) {
						__mmask16 mk = (__mmask16)(km >> (16 * c));
						float *sp = s + r * FB32 + 16 * c, *dpp = dp + r * FB32 + 16 * c;
						__m512 pe = _mm512_maskz_mov_ps(mk, exp16(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(sp), vs), vl)));
						__m512 de = _mm512_mul_ps(_mm512_mul_ps(pe, _mm512_sub_ps(_mm512_loadu_ps(dpp), vd)), vs);
						_mm512_storeu_ps(sp, pe);
						_mm512_storeu_ps(dpp, de);
					}
				}
				gemm32(dva + j0 * hp, hp, s, 1, FB32, dor + i0 * hp, hp, FB32, hp, FB32, 1);
				gemm32(dka + j0 * hp, hp, dp, 1, FB32, qr + i0 * hp, hp, FB32, hp, FB32, 1);
				gemm32(dqa + i0 * hp, hp, dp, FB32, 1, kr + j0 * hp, hp, FB32, hp, FB32, 1);
			}
		for (long t = 0; t < T; t++) memcpy(dq + t * qd + g * hd, dqa + t * hp, hd * 4);
	}
	for (long t = 0; t < T; t++) {
		memcpy(dk + t * kvd, dka + t * hp, hd * 4);
		memcpy(dv + t * kvd, dva + t * hp, hd * 4);
	}
}

#endif
