// Flash attention in bf16 products (attention_flash.go): query block ×
// key block tiles, online softmax in fp32, products on AMX tiles or with
// AVX-512 BF16 dot products. Both product paths read the same packed
// layouts, so the kernels above them are shared. x86-64 only; the
// functions carry their own target attributes, so the file builds for any
// x86-64 and runs only where flash_isa says the CPU has the features.
#ifndef HONE_CPU_FLASH_H
#define HONE_CPU_FLASH_H

#include <stdint.h>
#include <string.h>
#include <math.h>
#include <immintrin.h>
#include <cpuid.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "simd.h"

#define FB 64 // query and key block
#define BF16T __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#define AMXT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))

// flash_isa: 2 AMX (tiles granted by the kernel), 1 AVX-512 BF16, 0 neither.
static int flash_isa(void) {
	unsigned a, b, c, d;
	__builtin_cpu_init();
	if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
			__builtin_cpu_supports("avx512dq")))
		return 0;
	if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) // AVX512_BF16
		return 0;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 22)) || !(d & (1u << 24))) // AMX-BF16, AMX-TILE
		return 1;
	// Linux hands out the 8 KiB tile state only on request, once per
	// process (oneDNN asks too; asking twice is harmless).
	if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) != 0)
		return 1;
	return 2;
}

typedef struct {
	uint8_t palette, start;
	uint8_t res[14];
	uint16_t colsb[16];
	uint8_t rows[16];
} tilecfg;

// Every tile is 16 rows × 64 bytes: 0-3 fp32 results, 4-5 A, 6-7 B.
static AMXT void amx_begin(void) {
	tilecfg cfg __attribute__((aligned(64)));
	memset(&cfg, 0, sizeof cfg);
	cfg.palette = 1;
	for (int i = 0; i < 8; i++) {
		cfg.colsb[i] = 64;
		cfg.rows[i] = 16;
	}
	__asm__ volatile("" : : "r"(&cfg) : "memory"); // GCC does not see LDTILECFG read cfg
	_tile_loadconfig(&cfg);
}

static AMXT void amx_end(void) { _tile_release(); }

// C(M,N) (+)= A(M,K) · B. A is bf16 row-major (lda elements). B is in
// pairs: for k-pair r and column n the two bf16 B[2r][n], B[2r+1][n] at
// b + (n/16)·ps + r·rs + (n%16)·4 bytes (rs, ps in bytes), the layout
// TDPBF16PS and VDPBF16PS both read. M, N multiples of 32, K of 32.
static AMXT void amx_mm(float *c, long ldc, const uint16_t *a, long lda, const char *b, long rs, long ps, long M, long N, long K, int acc) {
	for (long m = 0; m < M; m += 32)
		for (long n = 0; n < N; n += 32) {
			float *c0 = c + m * ldc + n, *c1 = c0 + 16 * ldc;
			if (acc) {
				_tile_loadd(0, c0, ldc * 4);
				_tile_loadd(1, c0 + 16, ldc * 4);
				_tile_loadd(2, c1, ldc * 4);
				_tile_loadd(3, c1 + 16, ldc * 4);
			} else {
				_tile_zero(0);
				_tile_zero(1);
				_tile_zero(2);
				_tile_zero(3);
			}
			for (long k = 0; k < K; k += 32) {
				const char *b0 = b + (n / 16) * ps + (k / 2) * rs;
				_tile_loadd(4, a + m * lda + k, lda * 2);
				_tile_loadd(6, b0, rs);
				_tile_loadd(7, b0 + ps, rs);
				_tile_loadd(5, a + (m + 16) * lda + k, lda * 2);
				_tile_dpbf16ps(0, 4, 6);
				_tile_dpbf16ps(1, 4, 7);
				_tile_dpbf16ps(2, 5, 6);
				_tile_dpbf16ps(3, 5, 7);
			}
			_tile_stored(0, c0, ldc * 4);
			_tile_stored(1, c0 + 16, ldc * 4);
			_tile_stored(2, c1, ldc * 4);
			_tile_stored(3, c1 + 16, ldc * 4);
		}
}

// avx_mm is amx_mm with VDPBF16PS: 8 rows × 32 columns of accumulators.
static BF16T void avx_mm(float *c, long ldc, const uint16_t *a, long lda, const char *b, long rs, long ps, long M, long N, long K, int acc) {
	for (long m = 0; m < M; m += 8)
		for (long n = 0; n < N; n += 32) {
			__m512 s[8][2];
			for (int i = 0; i < 8; i++) {
				float *ci = c + (m + i) * ldc + n;
				s[i][0] = acc ? _mm512_loadu_ps(ci) : _mm512_setzero_ps();
				s[i][1] = acc ? _mm512_loadu_ps(ci + 16) : _mm512_setzero_ps();
			}
			const char *bp = b + (n / 16) * ps;
			for (long r = 0; r < K / 2; r++) {
				__m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + r * rs), b1 = (__m512bh)_mm512_loadu_si512(bp + ps + r * rs);
				for (int i = 0; i < 8; i++) {
					int32_t pair;
					memcpy(&pair, a + (m + i) * lda + 2 * r, 4);
					__m512bh av = (__m512bh)_mm512_set1_epi32(pair);
					s[i][0] = _mm512_dpbf16_ps(s[i][0], av, b0);
					s[i][1] = _mm512_dpbf16_ps(s[i][1], av, b1);
				}
			}
			for (int i = 0; i < 8; i++) {
				float *ci = c + (m + i) * ldc + n;
				_mm512_storeu_ps(ci, s[i][0]);
				_mm512_storeu_ps(ci + 16, s[i][1]);
			}
		}
}

// avx_mm64 is avx_mm with 4 rows × 64 columns of accumulators (4 B
// loads and 4 A broadcasts per 16 VDPBF16PS instead of 2 and 8), columns
// past a multiple of 64 left to avx_mm: each element the same chain over
// K, so the same bits. M a multiple of 8; only flash_bwd_avx calls it.
static BF16T void avx_mm64(float *c, long ldc, const uint16_t *a, long lda, const char *b, long rs, long ps, long M, long N, long K, int acc) {
	long N64 = N / 64 * 64;
	if (N64 < N) avx_mm(c + N64, ldc, a, lda, b + (N64 / 16) * ps, rs, ps, M, N - N64, K, acc);
	for (long n = 0; n < N64; n += 64)
		for (long m = 0; m < M; m += 4) {
			__m512 s[4][4];
			for (int i = 0; i < 4; i++)
				for (int v = 0; v < 4; v++) s[i][v] = acc ? _mm512_loadu_ps(c + (m + i) * ldc + n + 16 * v) : _mm512_setzero_ps();
			const char *bp = b + (n / 16) * ps;
			for (long r = 0; r < K / 2; r++) {
				__m512bh bv[4];
				for (int v = 0; v < 4; v++) bv[v] = (__m512bh)_mm512_loadu_si512(bp + v * ps + r * rs);
				for (int i = 0; i < 4; i++) {
					int32_t pair;
					memcpy(&pair, a + (m + i) * lda + 2 * r, 4);
					__m512bh av = (__m512bh)_mm512_set1_epi32(pair);
					for (int v = 0; v < 4; v++) s[i][v] = _mm512_dpbf16_ps(s[i][v], av, bv[v]);
				}
			}
			for (int i = 0; i < 4; i++)
				for (int v = 0; v < 4; v++) _mm512_storeu_ps(c + (m + i) * ldc + n + 16 * v, s[i][v]);
		}
}

static BF16T void mm(int amx, float *c, long ldc, const uint16_t *a, long lda, const uint16_t *b, long rs, long ps, long M, long N, long K, int acc) {
	if (amx)
		amx_mm(c, ldc, a, lda, (const char *)b, rs, ps, M, N, K, acc);
	else
		avx_mm(c, ldc, a, lda, (const char *)b, rs, ps, M, N, K, acc);
}

// f2bf rounds to nearest even (toBF16 in Go, NaN aside).
static inline uint16_t f2bf(float x) {
	uint32_t u;
	memcpy(&u, &x, 4);
	if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
	return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

// Packings of T rows of hd floats (row stride ld) into Tp rows (Tp a
// multiple of FB) and hp ≥ hd columns (a multiple of 32), zero padded.
// They round as f2bf, on 16 lanes (bf16x16), and move 32-bit pairs of bf16
// with scatters where the layout interleaves rows: at seq 256 the packing,
// not the products, was most of flash attention's time.

// bf16x16 is f2bf on 16 lanes (simd.go's bf16: VCVTNEPS2BF16 would flush
// denormals), as 16 words in the low halves of 32-bit lanes.
INLINE BF16T __m512i bf16x16(__m512 x) {
	__m512i u = _mm512_castps_si512(x);
	__m512i hi = _mm512_srli_epi32(u, 16);
	__m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)),
		_mm512_and_si512(hi, _mm512_set1_epi32(1))), 16);
	__mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
	return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
}

// row16 is columns e..e+15 of row t rounded to bf16 (zero past hd or T).
INLINE BF16T __m512i row16(const float *src, long ld, long T, long hd, long t, long e) {
	if (t >= T || e >= hd) return _mm512_setzero_si512();
	return bf16x16(_mm512_maskz_loadu_ps(hd - e >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (hd - e)) - 1), src + t * ld + e));
}

// pairs16 is 16 words: (row t0's value, row t1's value) per column.
INLINE BF16T __m512i pairs16(__m512i r0, __m512i r1) { return _mm512_or_si512(r0, _mm512_slli_epi32(r1, 16)); }

// cols16 is 16 words: columns e..e+31 of one row as pairs of neighbours.
INLINE BF16T __m512i cols16(__m512i lo, __m512i hi) {
	return _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(lo)), _mm512_cvtepi32_epi16(hi), 1);
}

// pack_rows: row-major [Tp][hp], an A operand over hd.
static BF16T void pack_rows(uint16_t *dst, const float *src, long ld, long T, long Tp, long hd, long hp) {
	for (long t = 0; t < Tp; t++)
		for (long e = 0; e < hp; e += 16)
			_mm256_storeu_si256((__m256i *)(dst + t * hp + e), _mm512_cvtepi32_epi16(row16(src, ld, T, hd, t, e)));
}

// pack_cols: transposed [hp][Tp] with rows COLS(Tp) apart, an A operand
// over t. (Rows a power of two of bytes apart would share cache sets.)
// Rows t, t+1 of one column are one 32-bit word.
#define COLS(Tp) ((Tp) + 32)
static BF16T void pack_cols(uint16_t *dst, const float *src, long ld, long T, long Tp, long hd, long hp) {
	__m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(COLS(Tp) / 2));
	for (long t = 0; t < Tp; t += 2)
		for (long e = 0; e < hp; e += 16)
			_mm512_i32scatter_epi32(dst + e * COLS(Tp) + t, idx, pairs16(row16(src, ld, T, hd, t, e), row16(src, ld, T, hd, t + 1, e)), 4);
}

// pack_bt: the B operand of X·Yᵀ over hd for rows t as columns:
// [Tp/16][hp/2][16][2]; rs = 64 bytes, ps = hp·32 bytes; rows from t at
// element t·hp. A row's column pairs land 16 words apart.
static BF16T void pack_bt(uint16_t *dst, const float *src, long ld, long T, long Tp, long hd, long hp) {
	__m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(16));
	for (long t = 0; t < Tp; t++)
		for (long e = 0; e < hp; e += 32)
			_mm512_i32scatter_epi32(dst + ((t / 16) * (hp / 2) + e / 2) * 32 + (t % 16) * 2, idx,
				cols16(row16(src, ld, T, hd, t, e), row16(src, ld, T, hd, t, e + 16)), 4);
}

// pack_vnni: the B operand of X·Y over t: [Tp/2][hp][2]; rs = hp·4
// bytes, ps = 64 bytes; rows from t at element t·hp.
static BF16T void pack_vnni(uint16_t *dst, const float *src, long ld, long T, long Tp, long hd, long hp) {
	for (long t = 0; t < Tp; t += 2)
		for (long e = 0; e < hp; e += 16)
			_mm512_storeu_si512(dst + ((t / 2) * hp + e) * 2, pairs16(row16(src, ld, T, hd, t, e), row16(src, ld, T, hd, t + 1, e)));
}

// ex16 is e^x on 16 lanes for the softmax: 2^(x·log2 e) as 2^k·2^f with
// k the nearest integer and 2^f, f in [-0.5, 0.5], from its degree-5
// Taylor polynomial (relative error below 3e-6, far under the bf16
// rounding of P that follows); lanes below 2^-125 give 0, so no result
// is denormal (denormals cost microcode assists). Half the work of exp16,
// which matters: the softmax, not the products, bounds flash attention.
INLINE BF16T __m512 ex16(__m512 x) {
	__m512 t = _mm512_max_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _mm512_set1_ps(-126.0f));
	__mmask16 live = _mm512_cmp_ps_mask(t, _mm512_set1_ps(-125.0f), _CMP_GE_OQ);
	__m512 k = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 f = _mm512_sub_ps(t, k);
	__m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.3333558e-3f), f, _mm512_set1_ps(9.6181291e-3f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24022651f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.69314718f));
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
	return _mm512_maskz_scalef_ps(live, p, k);
}

static inline long first_key(const int32_t *ds, long t, long window) {
	long s = ds[t];
	if (window > 0 && t - window + 1 > s) s = t - window + 1;
	return s;
}

// keymask: bits [lo,hi) of a 64-key block.
static inline uint64_t keymask(long lo, long hi) {
	if (lo < 0) lo = 0;
	if (hi > FB) hi = FB;
	if (lo >= hi) return 0;
	uint64_t h = hi >= 64 ? ~0ull : (1ull << hi) - 1;
	return h & ~((1ull << lo) - 1);
}

#define AL(n) (((n) + 31) & ~31L) // uint16 units, 64-byte aligned

// flash_fwd_ws: uint16 units of one forward worker's workspace.
static long flash_fwd_ws(long hp, long group) { return 3 * AL(FB * FB) + group * (3 * AL(FB * hp) + 4 * AL(FB)); }

// fwd_begin carves a forward worker's workspace (P, the group's packed Q
// blocks, S, and per head O, the running max and sum), packs the query
// block starting at i0 and resets the softmax state; it returns the
// block's rows.
static BF16T long fwd_begin(uint16_t *ws, const float *q, long ld, long T, long hd, long hp, long group, long i0,
		uint16_t **p, uint16_t **qb0, float **s, float **o0, float **mx0, float **l0) {
	*p = ws, *qb0 = ws + AL(FB * FB);
	*s = (float *)(*qb0 + group * AL(FB * hp)), *o0 = *s + AL(FB * FB), *mx0 = *o0 + group * AL(FB * hp), *l0 = *mx0 + group * AL(FB);
	long rows = T - i0 < FB ? T - i0 : FB;
	for (long g = 0; g < group; g++) {
		pack_rows(*qb0 + g * AL(FB * hp), q + g * hd + i0 * ld, ld, rows, FB, hd, hp);
		memset(*o0 + g * AL(FB * hp), 0, FB * hp * 4);
		for (long r = 0; r < FB; r++) {
			(*mx0)[g * AL(FB) + r] = -INFINITY;
			(*l0)[g * AL(FB) + r] = 0;
		}
	}
	return rows;
}

// fwd_end writes the block's outputs O / l and log-sum-exps mx + log l.
static BF16T void fwd_end(float *out, float *lse, const float *o0, const float *mx0, const float *l0, long ld, long T,
		long hd, long hp, long group, long i0, long rows) {
	for (long g = 0; g < group; g++) {
		const float *o = o0 + g * AL(FB * hp), *mx = mx0 + g * AL(FB), *l = l0 + g * AL(FB);
		for (long r = 0; r < rows; r++) {
			float inv = 1 / l[r];
			for (long e = 0; e < hd; e++) out[(i0 + r) * ld + g * hd + e] = o[r * hp + e] * inv;
			lse[g * T + i0 + r] = mx[r] + logf(l[r]);
		}
	}
}

// flash_fwd does query block [i0, i0+FB) of the group query heads that
// share one kv head, in one (row): each key block is read once for all of
// them. q, out point at the first head's first element of the row's first
// token (stride ld, heads hd apart); lse at the first head's T values
// (heads T apart); kt, vv the kv head's keys in pack_bt and values in
// pack_vnni; ds the row's document starts.
static BF16T void flash_fwd(int amx, float *out, float *lse, const float *q, long ld, const uint16_t *kt, const uint16_t *vv,
		const int32_t *ds, long T, long hd, long hp, long group, long window, float scale, long i0, uint16_t *ws) {
	uint16_t *p, *qb0;
	float *s, *o0, *mx0, *l0;
	long rows = fwd_begin(ws, q, ld, T, hd, hp, group, i0, &p, &qb0, &s, &o0, &mx0, &l0);
	if (amx) amx_begin();
	const __m512 vs = _mm512_set1_ps(scale);
	for (long j0 = first_key(ds, i0, window) / FB * FB; j0 <= i0; j0 += FB)
		for (long g = 0; g < group; g++) {
			uint16_t *qb = qb0 + g * AL(FB * hp);
			float *o = o0 + g * AL(FB * hp), *mx = mx0 + g * AL(FB), *l = l0 + g * AL(FB);
			mm(amx, s, FB, qb, hp, kt + j0 * hp, 64, hp * 32, FB, FB, hp, 0);
			for (long r = 0; r < FB; r++) {
				long t = i0 + r;
				uint64_t km = r < rows ? keymask(first_key(ds, t, window) - j0, t - j0 + 1) : 0;
				float *sr = s + r * FB;
				if (!km) {
					memset(p + r * FB, 0, FB * 2);
					continue;
				}
				__m512 x[FB / 16], vm = _mm512_set1_ps(-INFINITY);
				for (int c = 0; c < FB / 16; c++) {
					__mmask16 k = (__mmask16)(km >> (16 * c));
					x[c] = _mm512_mul_ps(_mm512_loadu_ps(sr + 16 * c), vs);
					vm = _mm512_mask_max_ps(vm, k, vm, x[c]);
				}
				float mnew = _mm512_reduce_max_ps(vm);
				if (mx[r] > mnew) mnew = mx[r];
				float alpha = mx[r] == -INFINITY ? 0 : expf(mx[r] - mnew);
				__m512 vmn = _mm512_set1_ps(mnew), sum = _mm512_setzero_ps();
				for (int c = 0; c < FB / 16; c++) {
					__mmask16 k = (__mmask16)(km >> (16 * c));
					__m512 e = _mm512_maskz_mov_ps(k, ex16(_mm512_sub_ps(x[c], vmn)));
					sum = _mm512_add_ps(sum, e);
					_mm256_storeu_si256((__m256i *)(p + r * FB + 16 * c), (__m256i)_mm512_cvtneps_pbh(e));
				}
				l[r] = l[r] * alpha + _mm512_reduce_add_ps(sum);
				mx[r] = mnew;
				if (alpha != 1) {
					__m512 va = _mm512_set1_ps(alpha);
					for (long e = 0; e < hp; e += 16) _mm512_storeu_ps(o + r * hp + e, _mm512_mul_ps(_mm512_loadu_ps(o + r * hp + e), va));
				}
			}
			mm(amx, o, hp, p, FB, vv + j0 * hp, hp * 4, 64, FB, hp, FB, 1);
		}
	if (amx) amx_end();
	fwd_end(out, lse, o0, mx0, l0, ld, T, hd, hp, group, i0, rows);
}

// flash_fwd_avx is flash_fwd for the VDPBF16PS path, with the same fp32
// operations in the same order (so the same results, bit for bit) and a
// working set that stays in L1: four query rows at a time go through S =
// QKᵀ (4 × 64 scores in 16 registers), the softmax and O += P·V (the four
// O rows in registers, rescaled there), so S, P and the O rows touched
// are 1 KiB each instead of flash_fwd's 16 KiB blocks of S and O per
// head. Each S and O element is the same VDPBF16PS chain over hd and over
// keys as avx_mm's. The strips are software pipelined (S of the next
// strip is issued between this strip's softmax and its P·V, into a second
// buffer), so the softmax's latency hides under independent products;
// alpha = 1 skips expf (expf(0) is 1 exactly), which takes the call out of
// the loop once a row's max settles. The AMX path keeps flash_fwd.

// fwd_s is S for query rows qb (4, hp apart) over the 64 keys of kb
// (pack_bt), into sb (4 rows of 64).
INLINE BF16T void fwd_s(float *sb, const uint16_t *qb, const char *kb, long hp) {
	__m512 sa[4][4];
	for (int i = 0; i < 4; i++)
		for (int c = 0; c < 4; c++) sa[i][c] = _mm512_setzero_ps();
	for (long r = 0; r < hp / 2; r++) {
		__m512bh kc[4];
		for (int c = 0; c < 4; c++) kc[c] = (__m512bh)_mm512_loadu_si512(kb + c * hp * 32 + r * 64);
		for (int i = 0; i < 4; i++) {
			int32_t pair;
			memcpy(&pair, qb + i * hp + 2 * r, 4);
			__m512bh av = (__m512bh)_mm512_set1_epi32(pair);
			for (int c = 0; c < 4; c++) sa[i][c] = _mm512_dpbf16_ps(sa[i][c], av, kc[c]);
		}
	}
	for (int i = 0; i < 4; i++)
		for (int c = 0; c < 4; c++) _mm512_storeu_ps(sb + i * FB + 16 * c, sa[i][c]);
}

// red4_max and red4_add reduce four rows of 16 lanes each to lanes 0-3
// (row i's result in lane i): for the sum the tree of
// _mm512_reduce_add_ps (lane j with j + 8, then j + 4, j + 2, j + 1), so
// each row's sum is the same fp32 additions on the same operands.
#define RED4(name, op)                                                                                         \
	INLINE BF16T __m128 name(__m512 r0, __m512 r1, __m512 r2, __m512 r3) {                                     \
		__m512 a = op(_mm512_shuffle_f32x4(r0, r1, 0xEE), _mm512_shuffle_f32x4(r0, r1, 0x44));                 \
		__m512 b = op(_mm512_shuffle_f32x4(r2, r3, 0xEE), _mm512_shuffle_f32x4(r2, r3, 0x44));                 \
		__m512 c = op(_mm512_shuffle_f32x4(a, b, 0xDD), _mm512_shuffle_f32x4(a, b, 0x88));                     \
		c = op(c, _mm512_permute_ps(c, 0x4E));                                                                 \
		c = op(c, _mm512_permute_ps(c, 0xB1));                                                                 \
		return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), c)); \
	}
RED4(red4_max, _mm512_max_ps)
RED4(red4_add, _mm512_add_ps)

// fwd_softmax is flash_fwd's softmax step for rows i0+m..i0+m+3 of key
// block j0, the four rows' reductions side by side in lanes (flash_fwd's
// scalar steps on each lane, expf only where a row's max grew): scores
// sb, probabilities into pb (4 rows of 64 bf16), the rows' running max mx
// and sum l updated, their rescaling into alpha (1 for a row with no key
// here, which flash_fwd leaves alone). It returns whether any alpha is
// not 1.
INLINE BF16T int fwd_softmax(uint16_t *pb, float *alpha, float *mx, float *l, const float *sb, const int32_t *ds, long window,
		long i0, long j0, long m, long rows, __m512 vs) {
	uint64_t km[4];
	__m512 x[4][FB / 16], vm[4];
	__mmask8 live = 0;
	for (int i = 0; i < 4; i++) {
		long rr = m + i, t = i0 + rr;
		km[i] = rr < rows ? keymask(first_key(ds, t, window) - j0, t - j0 + 1) : 0;
		live |= (km[i] != 0) << i;
		vm[i] = _mm512_set1_ps(-INFINITY);
		for (int c = 0; c < FB / 16; c++) {
			__mmask16 k = (__mmask16)(km[i] >> (16 * c));
			x[i][c] = _mm512_mul_ps(_mm512_loadu_ps(sb + i * FB + 16 * c), vs);
			vm[i] = _mm512_mask_max_ps(vm[i], k, vm[i], x[i][c]);
		}
	}
	__m128 mo = _mm_loadu_ps(mx + m), mn = _mm_max_ps(mo, red4_max(vm[0], vm[1], vm[2], vm[3])); // mo > max ? mo : max
	__mmask8 neg = _mm_cmp_ps_mask(mo, _mm_set1_ps(-INFINITY), _CMP_EQ_OQ), same = _mm_cmp_ps_mask(mo, mn, _CMP_EQ_OQ);
	__m128 a = _mm_mask_mov_ps(_mm_mask_mov_ps(_mm_setzero_ps(), same & ~neg, _mm_set1_ps(1)), ~live, _mm_set1_ps(1));
	__mmask8 grow = live & ~neg & ~same & 0xf;
	float mnv[4];
	_mm_storeu_ps(mnv, mn);
	_mm_storeu_ps(alpha, a);
	if (grow) {
		float d[4];
		_mm_storeu_ps(d, _mm_sub_ps(mo, mn));
		for (int i = 0; i < 4; i++)
			if (grow >> i & 1) alpha[i] = expf(d[i]);
		a = _mm_loadu_ps(alpha);
	}
	__m512 sum[4];
	for (int i = 0; i < 4; i++) {
		__m512 vmn = _mm512_set1_ps(mnv[i]);
		sum[i] = _mm512_setzero_ps();
		for (int c = 0; c < FB / 16; c++) {
			__mmask16 k = (__mmask16)(km[i] >> (16 * c));
			__m512 e = _mm512_maskz_mov_ps(k, ex16(_mm512_sub_ps(x[i][c], vmn)));
			sum[i] = _mm512_add_ps(sum[i], e);
			_mm256_storeu_si256((__m256i *)(pb + i * FB + 16 * c), (__m256i)_mm512_cvtneps_pbh(e));
		}
	}
	__m128 lo = _mm_loadu_ps(l + m);
	_mm_storeu_ps(l + m, _mm_mask_fmadd_ps(lo, live, a, red4_add(sum[0], sum[1], sum[2], sum[3]))); // l·alpha + sum where live
	_mm_storeu_ps(mx + m, _mm_mask_mov_ps(mo, live, mn));
	return _mm_cmp_ps_mask(a, _mm_set1_ps(1), _CMP_NEQ_UQ) != 0;
}

// fwd_pv is O rows o (4, hp apart), columns n..n+16·NV-1 (+)= P·V over
// one 64-key block (vb, pack_vnni), the rows scaled by alpha first where
// scaled is set.
INLINE BF16T void fwd_pv(const int NV, float *o, long hp, const uint16_t *pb, const char *vb, long n, const float *alpha, int scaled) {
	__m512 oa[4][4];
	for (int i = 0; i < 4; i++) {
		__m512 va = _mm512_set1_ps(alpha[i]);
		for (int v = 0; v < NV; v++) {
			oa[i][v] = _mm512_loadu_ps(o + i * hp + n + 16 * v);
			if (scaled) oa[i][v] = _mm512_mul_ps(oa[i][v], va);
		}
	}
	for (long r = 0; r < FB / 2; r++) {
		__m512bh b[4];
		for (int v = 0; v < NV; v++) b[v] = (__m512bh)_mm512_loadu_si512(vb + r * hp * 4 + (n + 16 * v) * 4);
		for (int i = 0; i < 4; i++) {
			int32_t pair;
			memcpy(&pair, pb + i * FB + 2 * r, 4);
			__m512bh av = (__m512bh)_mm512_set1_epi32(pair);
			for (int v = 0; v < NV; v++) oa[i][v] = _mm512_dpbf16_ps(oa[i][v], av, b[v]);
		}
	}
	for (int i = 0; i < 4; i++)
		for (int v = 0; v < NV; v++) _mm512_storeu_ps(o + i * hp + n + 16 * v, oa[i][v]);
}

static BF16T void flash_fwd_avx(float *out, float *lse, const float *q, long ld, const uint16_t *kt, const uint16_t *vv,
		const int32_t *ds, long T, long hd, long hp, long group, long window, float scale, long i0, uint16_t *ws) {
	uint16_t *p, *qb0;
	float *s, *o0, *mx0, *l0;
	long rows = fwd_begin(ws, q, ld, T, hd, hp, group, i0, &p, &qb0, &s, &o0, &mx0, &l0);
	const __m512 vs = _mm512_set1_ps(scale);
	// Strip u is rows 4·(u % 16).. of head u / 16; S and P alternate
	// between two 4-row buffers.
	const long strips = group * (FB / 4);
	float alpha[2][4];
	for (long j0 = first_key(ds, i0, window) / FB * FB; j0 <= i0; j0 += FB) {
		const char *kb = (const char *)(kt + j0 * hp), *vb = (const char *)(vv + j0 * hp);
		fwd_s(s, qb0, kb, hp);
		for (long u = 0; u < strips; u++) {
			long g = u / (FB / 4), m = u % (FB / 4) * 4, b = u & 1;
			float *o = o0 + g * AL(FB * hp);
			uint16_t *pb = p + b * 4 * FB;
			int scaled = fwd_softmax(pb, alpha[b], mx0 + g * AL(FB), l0 + g * AL(FB), s + b * 4 * FB, ds, window, i0, j0, m, rows, vs);
			if (u + 1 < strips) {
				long g1 = (u + 1) / (FB / 4), m1 = (u + 1) % (FB / 4) * 4;
				fwd_s(s + (1 - b) * 4 * FB, qb0 + g1 * AL(FB * hp) + m1 * hp, kb, hp);
			}
			long n = 0;
			for (; n + 64 <= hp; n += 64) fwd_pv(4, o + m * hp, hp, pb, vb, n, alpha[b], scaled);
			if (n < hp) fwd_pv(2, o + m * hp, hp, pb, vb, n, alpha[b], scaled);
		}
	}
	fwd_end(out, lse, o0, mx0, l0, ld, T, hd, hp, group, i0, rows);
}

#define SB 4 // key blocks per sweep of the backward over query blocks

// flash_bwd_ws: uint16 units of one backward worker's workspace.
static long flash_bwd_ws(long Tp, long hp) {
	return 9 * AL(COLS(Tp) * hp) + 2 * 2 * AL(Tp) + 2 * 2 * AL(FB * FB) + 3 * AL(FB * FB) + 2 * 2 * SB * AL(hp * FB);
}

// pairs2 writes rows x0, x1 (64 floats each) as bf16 pairs (x0[n], x1[n]).
static inline BF16T void pairs2(uint16_t *dst, __m512 a0, __m512 a1, __m512i idx) {
	__m512i w = (__m512i)_mm512_cvtne2ps_pbh(a1, a0); // words 0-15 from a0, 16-31 from a1
	_mm512_storeu_si512(dst, _mm512_permutexvar_epi16(idx, w));
}

// pair_idx interleaves two 16-lane rows into bf16 pairs (pairs2's index).
static BF16T __m512i pair_idx(void) {
	uint16_t ix[32];
	for (int i = 0; i < 16; i++) {
		ix[2 * i] = i;
		ix[2 * i + 1] = 16 + i;
	}
	return _mm512_loadu_si512(ix);
}

// bwd_delta writes δ = rowsum(dO∘O) and the rows' log-sum-exp (0 past T)
// for Tp rows: δ in 16 lanes over e, then their sum, a reordering of the
// fp32 sum whose error (≤ hd·2⁻²⁴·Σ|dO∘O| either way) is far under the
// bf16 rounding of dS that δ feeds.
static BF16T void bwd_delta(float *delta, float *lv, const float *doh, const float *oh, const float *lh, long qd, long T, long Tp, long hd) {
	for (long t = 0; t < Tp; t++) {
		__m512 acc = _mm512_setzero_ps();
		if (t < T)
			for (long e = 0; e < hd; e += 16) {
				__mmask16 mk = hd - e >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (hd - e)) - 1);
				acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, doh + t * qd + e), _mm512_maskz_loadu_ps(mk, oh + t * qd + e), acc);
			}
		delta[t] = _mm512_reduce_add_ps(acc);
		lv[t] = t < T ? lh[t] : 0;
	}
}

// bwd_add_kv adds the sweep's nj transposed dK, dV blocks (from key J0)
// into dk and dv.
static BF16T void bwd_add_kv(float *dk, float *dv, const float *dkT0, const float *dvT0, long J0, long nj, long T, long kvd, long hd, long hp) {
	__m512i col = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(FB));
	for (long jj = 0; jj < nj; jj++) {
		long j0 = J0 + jj * FB;
		const float *dkT = dkT0 + jj * AL(hp * FB), *dvT = dvT0 + jj * AL(hp * FB);
		for (long c = 0; c < FB && j0 + c < T; c++)
			for (long e = 0; e < hd; e += 16) {
				__mmask16 mk = hd - e >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (hd - e)) - 1);
				float *pk = dk + (j0 + c) * kvd + e, *pv = dv + (j0 + c) * kvd + e;
				__m512 gk = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, col, dkT + e * FB + c, 4);
				__m512 gv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, col, dvT + e * FB + c, 4);
				_mm512_mask_storeu_ps(pk, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, pk), gk));
				_mm512_mask_storeu_ps(pv, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, pv), gv));
			}
	}
}

// flash_bwd is the whole backward of one (row, kv head): for each of its
// group's query heads, key blocks in turn, each against the query blocks
// that see it: S = QKᵀ, P = exp(S·scale − lse), dP = dO·Vᵀ,
// dS = P∘(dP − δ)·scale, then dVᵀ += dOᵀ·P, dKᵀ += Qᵀ·dS (into per-block
// accumulators added to dk, dv, which this call alone writes) and
// dQ += dS·K (into a per-head accumulator copied to dq). Pointers are at
// the row's first token and the first head (query heads h0.., kv head).
static BF16T void flash_bwd(int amx, float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
		const float *q, const float *k, const float *v, const int32_t *ds, long T, long qd, long kvd, long hd, long hp,
		long group, long window, float scale, uint16_t *ws) {
	long Tp = (T + FB - 1) / FB * FB, n = AL(COLS(Tp) * hp);
	uint16_t *kt = ws, *vt = kt + n, *kv = vt + n, *qa = kv + n, *qT = qa + n, *da = qT + n, *dT = da + n;
	float *dqa = (float *)(dT + n), *delta = dqa + n, *lv = delta + AL(Tp), *s = lv + AL(Tp), *dp = s + AL(FB * FB);
	uint16_t *dsb = (uint16_t *)(dp + AL(FB * FB)), *pv = dsb + AL(FB * FB), *dsv = pv + AL(FB * FB);
	float *dkT0 = (float *)(dsv + AL(FB * FB)), *dvT0 = dkT0 + SB * AL(hp * FB);
	pack_bt(kt, k, kvd, T, Tp, hd, hp);
	pack_bt(vt, v, kvd, T, Tp, hd, hp);
	pack_vnni(kv, k, kvd, T, Tp, hd, hp);
	const __m512 vs = _mm512_set1_ps(scale);
	const __m512i idx = pair_idx();
	for (long g = 0; g < group; g++) {
		const float *qh = q + g * hd, *doh = dout + g * hd, *oh = out + g * hd, *lh = lse + g * T;
		pack_rows(qa, qh, qd, T, Tp, hd, hp);
		pack_cols(qT, qh, qd, T, Tp, hd, hp);
		pack_rows(da, doh, qd, T, Tp, hd, hp);
		pack_cols(dT, doh, qd, T, Tp, hd, hp);
		bwd_delta(delta, lv, doh, oh, lh, qd, T, Tp, hd);
		memset(dqa, 0, Tp * hp * 4);
		if (amx) amx_begin();
		// SB key blocks at a time, so each query block's operands, once
		// loaded, serve several key blocks.
		for (long J0 = 0; J0 < T; J0 += SB * FB) {
			long nj = (T - J0 + FB - 1) / FB < SB ? (T - J0 + FB - 1) / FB : SB;
			memset(dkT0, 0, SB * AL(hp * FB) * 4);
			memset(dvT0, 0, SB * AL(hp * FB) * 4);
			for (long i0 = J0; i0 < T; i0 += FB) {
				long fk = first_key(ds, i0, window);
				if (fk >= J0 + nj * FB) break; // later query blocks start later still
				for (long jj = 0; jj < nj; jj++) {
					long j0 = J0 + jj * FB;
					if (j0 > i0) break;
					if (fk >= j0 + FB) continue;
					float *dkT = dkT0 + jj * AL(hp * FB), *dvT = dvT0 + jj * AL(hp * FB);
					mm(amx, s, FB, qa + i0 * hp, hp, kt + j0 * hp, 64, hp * 32, FB, FB, hp, 0);
					mm(amx, dp, FB, da + i0 * hp, hp, vt + j0 * hp, 64, hp * 32, FB, FB, hp, 0);
					for (long r = 0; r < FB; r += 2) {
						__m512 pr[2][FB / 16], dr[2][FB / 16];
						for (int u = 0; u < 2; u++) {
							long t = i0 + r + u;
							uint64_t km = t < T ? keymask(first_key(ds, t, window) - j0, t - j0 + 1) : 0;
							__m512 vl = _mm512_set1_ps(lv[t]), vd = _mm512_set1_ps(delta[t]);
							for (int c = 0; c < FB / 16; c++) {
								__mmask16 mk = (__mmask16)(km >> (16 * c));
								__m512 x = _mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(s + (r + u) * FB + 16 * c), vs), vl);
								__m512 pe = _mm512_maskz_mov_ps(mk, ex16(x));
								__m512 de = _mm512_mul_ps(_mm512_mul_ps(pe, _mm512_sub_ps(_mm512_loadu_ps(dp + (r + u) * FB + 16 * c), vd)), vs);
								pr[u][c] = pe;
								dr[u][c] = de;
								_mm256_storeu_si256((__m256i *)(dsb + (r + u) * FB + 16 * c), (__m256i)_mm512_cvtneps_pbh(de));
							}
						}
						for (int c = 0; c < FB / 16; c++) {
							pairs2(pv + (r / 2) * FB * 2 + 32 * c, pr[0][c], pr[1][c], idx);
							pairs2(dsv + (r / 2) * FB * 2 + 32 * c, dr[0][c], dr[1][c], idx);
						}
					}
					mm(amx, dvT, FB, dT + i0, COLS(Tp), pv, FB * 4, 64, hp, FB, FB, 1);
					mm(amx, dkT, FB, qT + i0, COLS(Tp), dsv, FB * 4, 64, hp, FB, FB, 1);
					mm(amx, dqa + i0 * hp, hp, dsb, FB, kv + j0 * hp, hp * 4, 64, FB, hp, FB, 1);
				}
			}
			bwd_add_kv(dk, dv, dkT0, dvT0, J0, nj, T, kvd, hd, hp);
		}
		if (amx) amx_end();
		for (long t = 0; t < T; t++)
			for (long e = 0; e < hd; e++) dq[t * qd + g * hd + e] = dqa[t * hp + e];
	}
}

// flash_bwd_avx is flash_bwd for the VDPBF16PS path, with the same
// products in the same order (so the same results, bit for bit) and less
// traffic between the caches: Qᵀ and dOᵀ packed block by block (one 8 KiB
// run per query block instead of 64 rows Tp apart), and dQ's product done
// once per query block over the sweep's key blocks instead of once per key
// block (dQ's fp32 block is loaded and stored SB times less). The AMX path
// keeps flash_bwd.
static long flash_bwd_avx_ws(long Tp, long hp) { return flash_bwd_ws(Tp, hp) + (SB - 1) * AL(FB * FB); }

// pack_colblocks is pack_cols block by block: [Tp/FB][hp][FB], a query
// block's transposed rows FB apart, from element t0·hp.
static BF16T void pack_colblocks(uint16_t *dst, const float *src, long ld, long T, long Tp, long hd, long hp) {
	__m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(FB / 2));
	for (long t = 0; t < Tp; t += 2)
		for (long e = 0; e < hp; e += 16)
			_mm512_i32scatter_epi32(dst + (t / FB) * hp * FB + e * FB + t % FB, idx, pairs16(row16(src, ld, T, hd, t, e), row16(src, ld, T, hd, t + 1, e)), 4);
}

// bwd_sdp is the middle of flash_bwd_avx's step for query block i0 and key
// block j0: S = QKᵀ and dP = dO·Vᵀ four query rows × 32 keys at a time in
// registers, and from them P and dS, written as flash_bwd writes them (dS
// rows into dsb, rows ldsb apart; P and dS in row pairs into pv, dsv).
// S and dP never go to memory. Every value is what flash_bwd computes:
// each score is the same fp32 chain over hd, and the elementwise steps are
// the same operations in the same order.
static BF16T void bwd_sdp(const uint16_t *qa, const uint16_t *da, const char *kt, const char *vt, long hp, const float *lv,
		const float *delta, const int32_t *ds, long T, long window, long i0, long j0, __m512 vs, uint16_t *dsb, long ldsb,
		uint16_t *pv, uint16_t *dsv, __m512i idx) {
	for (long m = 0; m < FB; m += 4) {
		uint64_t km[4];
		for (int i = 0; i < 4; i++) {
			long t = i0 + m + i;
			km[i] = t < T ? keymask(first_key(ds, t, window) - j0, t - j0 + 1) : 0;
		}
		for (long n = 0; n < FB; n += 32) {
			__m512 sa[4][2], pa[4][2];
			for (int i = 0; i < 4; i++)
				sa[i][0] = sa[i][1] = pa[i][0] = pa[i][1] = _mm512_setzero_ps();
			const char *kb = kt + (n / 16) * hp * 32, *vb = vt + (n / 16) * hp * 32;
			for (long r = 0; r < hp / 2; r++) {
				__m512bh k0 = (__m512bh)_mm512_loadu_si512(kb + r * 64), k1 = (__m512bh)_mm512_loadu_si512(kb + hp * 32 + r * 64);
				__m512bh v0 = (__m512bh)_mm512_loadu_si512(vb + r * 64), v1 = (__m512bh)_mm512_loadu_si512(vb + hp * 32 + r * 64);
				for (int i = 0; i < 4; i++) {
					int32_t pq, pd;
					memcpy(&pq, qa + (m + i) * hp + 2 * r, 4);
					memcpy(&pd, da + (m + i) * hp + 2 * r, 4);
					__m512bh aq = (__m512bh)_mm512_set1_epi32(pq), ad = (__m512bh)_mm512_set1_epi32(pd);
					sa[i][0] = _mm512_dpbf16_ps(sa[i][0], aq, k0);
					sa[i][1] = _mm512_dpbf16_ps(sa[i][1], aq, k1);
					pa[i][0] = _mm512_dpbf16_ps(pa[i][0], ad, v0);
					pa[i][1] = _mm512_dpbf16_ps(pa[i][1], ad, v1);
				}
			}
			__m512 pr[4][2], dr[4][2];
			for (int i = 0; i < 4; i++) {
				__m512 vl = _mm512_set1_ps(lv[m + i]), vd = _mm512_set1_ps(delta[m + i]);
				for (int c = 0; c < 2; c++) {
					__mmask16 mk = (__mmask16)(km[i] >> (n + 16 * c));
					__m512 x = _mm512_sub_ps(_mm512_mul_ps(sa[i][c], vs), vl);
					__m512 pe = _mm512_maskz_mov_ps(mk, ex16(x));
					__m512 de = _mm512_mul_ps(_mm512_mul_ps(pe, _mm512_sub_ps(pa[i][c], vd)), vs);
					pr[i][c] = pe;
					dr[i][c] = de;
					_mm256_storeu_si256((__m256i *)(dsb + (m + i) * ldsb + n + 16 * c), (__m256i)_mm512_cvtneps_pbh(de));
				}
			}
			for (int i = 0; i < 4; i += 2)
				for (int c = 0; c < 2; c++) {
					pairs2(pv + ((m + i) / 2) * FB * 2 + 32 * (n / 16 + c), pr[i][c], pr[i + 1][c], idx);
					pairs2(dsv + ((m + i) / 2) * FB * 2 + 32 * (n / 16 + c), dr[i][c], dr[i + 1][c], idx);
				}
		}
	}
}

static BF16T void flash_bwd_avx(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
		const float *q, const float *k, const float *v, const int32_t *ds, long T, long qd, long kvd, long hd, long hp,
		long group, long window, float scale, uint16_t *ws) {
	long Tp = (T + FB - 1) / FB * FB, n = AL(COLS(Tp) * hp);
	uint16_t *kt = ws, *vt = kt + n, *kv = vt + n, *qa = kv + n, *qT = qa + n, *da = qT + n, *dT = da + n;
	float *dqa = (float *)(dT + n), *delta = dqa + n, *lv = delta + AL(Tp), *s = lv + AL(Tp), *dp = s + AL(FB * FB);
	uint16_t *dsb = (uint16_t *)(dp + AL(FB * FB)), *pv = dsb + SB * AL(FB * FB), *dsv = pv + AL(FB * FB);
	float *dkT0 = (float *)(dsv + AL(FB * FB)), *dvT0 = dkT0 + SB * AL(hp * FB);
	pack_bt(kt, k, kvd, T, Tp, hd, hp);
	pack_bt(vt, v, kvd, T, Tp, hd, hp);
	pack_vnni(kv, k, kvd, T, Tp, hd, hp);
	const __m512 vs = _mm512_set1_ps(scale);
	const __m512i idx = pair_idx();
	for (long g = 0; g < group; g++) {
		const float *qh = q + g * hd, *doh = dout + g * hd, *oh = out + g * hd, *lh = lse + g * T;
		pack_rows(qa, qh, qd, T, Tp, hd, hp);
		pack_colblocks(qT, qh, qd, T, Tp, hd, hp);
		pack_rows(da, doh, qd, T, Tp, hd, hp);
		pack_colblocks(dT, doh, qd, T, Tp, hd, hp);
		bwd_delta(delta, lv, doh, oh, lh, qd, T, Tp, hd);
		memset(dqa, 0, Tp * hp * 4);
		// SB key blocks at a time, so each query block's operands, once
		// loaded, serve several key blocks.
		for (long J0 = 0; J0 < T; J0 += SB * FB) {
			long nj = (T - J0 + FB - 1) / FB < SB ? (T - J0 + FB - 1) / FB : SB;
			memset(dkT0, 0, SB * AL(hp * FB) * 4);
			memset(dvT0, 0, SB * AL(hp * FB) * 4);
			for (long i0 = J0; i0 < T; i0 += FB) {
				long fk = first_key(ds, i0, window);
				if (fk >= J0 + nj * FB) break; // later query blocks start later still
				long jlo = -1, jhi = -1;
				for (long jj = 0; jj < nj; jj++) {
					long j0 = J0 + jj * FB;
					if (j0 > i0) break;
					if (fk >= j0 + FB) continue;
					if (jlo < 0) jlo = jj;
					jhi = jj;
					float *dkT = dkT0 + jj * AL(hp * FB), *dvT = dvT0 + jj * AL(hp * FB);
					bwd_sdp(qa + i0 * hp, da + i0 * hp, (const char *)(kt + j0 * hp), (const char *)(vt + j0 * hp), hp, lv + i0, delta + i0, ds,
						T, window, i0, j0, vs, dsb + jj * FB, SB * FB, pv, dsv, idx);
					avx_mm64(dvT, FB, dT + i0 * hp, FB, (const char *)pv, FB * 4, 64, hp, FB, FB, 1);
					avx_mm64(dkT, FB, qT + i0 * hp, FB, (const char *)dsv, FB * 4, 64, hp, FB, FB, 1);
				}
				// dQ += dS·K over the key blocks just done in one product:
				// the same fp32 chain per element as one product per block.
				if (jlo >= 0)
					avx_mm64(dqa + i0 * hp, hp, dsb + jlo * FB, SB * FB, (const char *)(kv + (J0 + jlo * FB) * hp), hp * 4, 64, FB, hp,
						(jhi - jlo + 1) * FB, 1);
			}
			bwd_add_kv(dk, dv, dkT0, dvT0, J0, nj, T, kvd, hd, hp);
		}
		for (long t = 0; t < T; t++)
			for (long e = 0; e < hd; e++) dq[t * qd + g * hd + e] = dqa[t * hp + e];
	}
}

#endif
