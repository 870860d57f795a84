//go:build amd64 && cgo

package gguf

/*
#cgo CFLAGS: -O3
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

// Each function names the instructions it needs; Go calls it only where
// the CPU has them (useVNNI, useAVX2).
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#define T256 __attribute__((target("avx2,fma,f16c")))
#define H2F(p) _cvtsh_ss((uint16_t)((p)[0] | ((p)[1] << 8)))

// The 6-bit scales and mins of a Q4_K/Q5_K super-block's 8 sub-blocks, as
// scalars (sc, mn) and as 16 bytes (scales 0-7, mins 0-7) for the vector
// kernels: sub-blocks 0-3 keep theirs in the low 6 bits of bytes j (scale)
// and j+4 (min), 4-7 in a nibble of byte j+8 and the top 2 bits of bytes
// j and j+4; four bytes at a time.
static inline void k4_scales(const uint8_t *s, int32_t *sc, int32_t *mn) {
	for (int j = 0; j < 4; j++) {
		sc[j] = s[j] & 63;
		mn[j] = s[j + 4] & 63;
		sc[j + 4] = (s[j + 8] & 15) | ((s[j] >> 6) << 4);
		mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
	}
}

static inline void k4_scales32(const uint8_t *s, uint32_t u[4]) {
	uint32_t u0, u1, u2;
	memcpy(&u0, s, 4);
	memcpy(&u1, s + 4, 4);
	memcpy(&u2, s + 8, 4);
	u[0] = u0 & 0x3f3f3f3f;
	u[1] = (u2 & 0x0f0f0f0f) | (((u0 >> 6) & 0x03030303) << 4);
	u[2] = u1 & 0x3f3f3f3f;
	u[3] = ((u2 >> 4) & 0x0f0f0f0f) | (((u1 >> 6) & 0x03030303) << 4);
}

// ---- AVX-512 VNNI: _mm512_dpbusd_epi32 multiplies 64 unsigned by 64
// signed bytes and adds each 4 products into one of 16 int32 lanes.

// Q8_0 weights · Q8_0 activations, two 32-blocks a step: the weights'
// signs moved onto the activations so that dpbusd's unsigned operand is
// |w|; lanes 0-7 hold the first block's sum, 8-15 the second's.
T512 static float q8_0_row_512(const uint8_t *b, long nb, const int8_t *q, const float *xd) {
	__m512 acc = _mm512_setzero_ps();
	const __m512i zero = _mm512_setzero_si512();
	long i = 0;
	for (; i + 1 < nb; i += 2, b += 68) {
		__m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b + 2))), _mm256_loadu_si256((const __m256i *)(b + 36)), 1);
		__m512i x = _mm512_loadu_si512(q + 32 * i);
		__m512i sx = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), zero, x);
		__m512i dot = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(w), sx);
		__m512 sc = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(H2F(b) * xd[i]), _mm512_set1_ps(H2F(b + 34) * xd[i + 1]));
		acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), sc, acc);
	}
	if (i < nb) {
		__m512i w = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(b + 2)));
		__m512i x = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(q + 32 * i)));
		__m512i sx = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), zero, x);
		__m512i dot = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(w), sx);
		acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(H2F(b) * xd[i]), acc);
	}
	return _mm512_reduce_add_ps(acc);
}

// Q4_K (five=0) or Q5_K (five=1) weights · Q8_K activations. 64 bytes of
// quants hold 4 sub-blocks: the low nibbles sub-blocks 4jj and 4jj+2, the
// high nibbles 4jj+1 and 4jj+3; the activations are gathered to match.
// Each lane's integer sum is multiplied by its sub-block's scale; the mins
// come from the activation's 16-sums.
T512 static float q4k_row_512(const uint8_t *b, long nb, const int8_t *q, const float *xd, const int16_t *xs, int five) {
	const __m512i m4 = _mm512_set1_epi8(15), one = _mm512_set1_epi8(1), zero = _mm512_setzero_si512();
	const __m512i idx[4] = {
		_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2),
		_mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3),
		_mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6),
		_mm512_setr_epi32(5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 7, 7, 7),
	};
	const long bb = five ? 176 : 144;
	const __m512i midx = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
	__m512 acc = _mm512_setzero_ps(), macc = _mm512_setzero_ps();
	for (long i = 0; i < nb; i++, b += bb) {
		uint32_t u[4];
		k4_scales32(b + 4, u);
		__m512i scv = _mm512_cvtepu8_epi32(_mm_set_epi32(u[3], u[2], u[1], u[0]));
		const uint8_t *qs = b + (five ? 48 : 16);
		const int8_t *x = q + 256 * i;
		__m512i hh = zero;
		if (five) {
			__m256i h = _mm256_loadu_si256((const __m256i *)(b + 16));
			hh = _mm512_inserti64x4(_mm512_castsi256_si512(h), h, 1);
		}
		__m512i isum = zero;
		for (int jj = 0; jj < 2; jj++) {
			__m512i w = _mm512_loadu_si512(qs + 64 * jj);
			__m512i lo = _mm512_and_si512(w, m4), hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
			if (five) { // bit 4jj (+2 in the upper half) of qh is the low nibbles' 5th bit, 4jj+1 (+2) the high's
				__m512i sl = _mm512_mask_blend_epi16(0xFFFF0000, _mm512_set1_epi16(4 * jj), _mm512_set1_epi16(4 * jj + 2));
				__m512i sh = _mm512_add_epi16(sl, _mm512_set1_epi16(1));
				lo = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hh, sl), one), 4));
				hi = _mm512_or_si512(hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hh, sh), one), 4));
			}
			const int8_t *xj = x + 128 * jj;
			__m512i xa = _mm512_loadu_si512(xj), xb = _mm512_loadu_si512(xj + 64);
			__m512i xlo = _mm512_shuffle_i64x2(xa, xb, 0x44), xhi = _mm512_shuffle_i64x2(xa, xb, 0xEE); // [x0..31 x64..95], [x32..63 x96..127]
			__m512i dl = _mm512_dpbusd_epi32(zero, lo, xlo), dh = _mm512_dpbusd_epi32(zero, hi, xhi);
			isum = _mm512_add_epi32(isum, _mm512_madd_epi16(dl, _mm512_permutexvar_epi32(idx[2 * jj], scv)));
			isum = _mm512_add_epi32(isum, _mm512_madd_epi16(dh, _mm512_permutexvar_epi32(idx[2 * jj + 1], scv)));
		}
		// Each 16-group's Σ x times its sub-block's min.
		__m512i bsv = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(xs + 16 * i)));
		__m512i summ = _mm512_madd_epi16(bsv, _mm512_permutexvar_epi32(midx, scv));
		acc = _mm512_fmadd_ps(_mm512_set1_ps(H2F(b) * xd[i]), _mm512_cvtepi32_ps(isum), acc);
		macc = _mm512_fmadd_ps(_mm512_set1_ps(H2F(b + 2) * xd[i]), _mm512_cvtepi32_ps(summ), macc);
	}
	return _mm512_reduce_add_ps(_mm512_sub_ps(acc, macc));
}

// Q6_K weights · Q8_K activations: the 6-bit quants taken unsigned
// (0..63), 64 consecutive elements a vector, each lane's sum times its
// 16-group's int8 scale; the -32 offset is 32·Σ scale·(group's Σ x).
T512 static float q6k_row_512(const uint8_t *b, long nb, const int8_t *q, const float *xd, const int16_t *xs) {
	const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3), zero = _mm512_setzero_si512();
	const __m512i idx[4] = {
		_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
		_mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7),
		_mm512_setr_epi32(8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11),
		_mm512_setr_epi32(12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15),
	};
	__m512 acc = _mm512_setzero_ps();
	for (long i = 0; i < nb; i++, b += 210) {
		const uint8_t *ql = b, *qh = b + 128;
		// int8 scales in the low int16 of each lane, the high int16 zero:
		// _mm512_madd_epi16 then multiplies a lane's int32 (|v| < 2^15 here)
		// by its scale exactly, in one uop (vpmulld takes two).
		__m512i scv = _mm512_and_si512(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 192))), _mm512_set1_epi32(0xFFFF));
		const int8_t *x = q + 256 * i;
		__m512i isum = zero;
		for (int n = 0; n < 2; n++) {
			__m512i l = _mm512_loadu_si512(ql + 64 * n);
			__m256i h = _mm256_loadu_si256((const __m256i *)(qh + 32 * n));
			__m512i ha = _mm512_inserti64x4(_mm512_castsi256_si512(h), _mm256_srli_epi16(h, 2), 1);
			__m512i hb = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_srli_epi16(h, 4)), _mm256_srli_epi16(h, 6), 1);
			__m512i qa = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(_mm512_and_si512(ha, m3), 4));
			__m512i qb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), _mm512_slli_epi16(_mm512_and_si512(hb, m3), 4));
			__m512i da = _mm512_dpbusd_epi32(zero, qa, _mm512_loadu_si512(x + 128 * n));
			__m512i db = _mm512_dpbusd_epi32(zero, qb, _mm512_loadu_si512(x + 128 * n + 64));
			isum = _mm512_add_epi32(isum, _mm512_madd_epi16(da, _mm512_permutexvar_epi32(idx[2 * n], scv)));
			isum = _mm512_add_epi32(isum, _mm512_madd_epi16(db, _mm512_permutexvar_epi32(idx[2 * n + 1], scv)));
		}
		__m512i bsv = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(xs + 16 * i)));
		isum = _mm512_sub_epi32(isum, _mm512_slli_epi32(_mm512_madd_epi16(bsv, scv), 5));
		acc = _mm512_fmadd_ps(_mm512_set1_ps(H2F(b + 208) * xd[i]), _mm512_cvtepi32_ps(isum), acc);
	}
	return _mm512_reduce_add_ps(acc);
}

// ---- AVX2: _mm256_maddubs_epi16 (unsigned × signed bytes, pairs added
// to int16; no pair here can saturate) then _mm256_madd_epi16.

T256 static inline float hsum256(__m256 v) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

T256 static float q8_0_row_256(const uint8_t *b, long nb, const int8_t *q, const float *xd) {
	const __m256i ones = _mm256_set1_epi16(1);
	__m256 acc = _mm256_setzero_ps();
	for (long i = 0; i < nb; i++, b += 34) {
		__m256i w = _mm256_loadu_si256((const __m256i *)(b + 2));
		__m256i x = _mm256_loadu_si256((const __m256i *)(q + 32 * i));
		__m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)), ones);
		acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(H2F(b) * xd[i]), acc);
	}
	return hsum256(acc);
}

T256 static float q4k_row_256(const uint8_t *b, long nb, const int8_t *q, const float *xd, const int16_t *xs, int five) {
	const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
	const long bb = five ? 176 : 144;
	__m256 acc = _mm256_setzero_ps();
	float mins = 0;
	for (long i = 0; i < nb; i++, b += bb) {
		int32_t s[16];
		k4_scales(b + 4, s, s + 8);
		const uint8_t *qs = b + (five ? 48 : 16);
		const int8_t *x = q + 256 * i;
		__m256i h = five ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
		__m256i isum = _mm256_setzero_si256();
		for (int j = 0; j < 4; j++) {
			__m256i w = _mm256_loadu_si256((const __m256i *)(qs + 32 * j));
			__m256i lo = _mm256_and_si256(w, m4), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), m4);
			if (five) {
				lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * j)), one), 4));
				hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * j + 1)), one), 4));
			}
			__m256i pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x + 64 * j))), _mm256_set1_epi16(s[2 * j]));
			__m256i ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 64 * j + 32))), _mm256_set1_epi16(s[2 * j + 1]));
			isum = _mm256_add_epi32(isum, _mm256_add_epi32(pl, ph));
		}
		const int16_t *bs = xs + 16 * i;
		int32_t summ = 0;
		for (int j = 0; j < 8; j++)
			summ += s[8 + j] * (bs[2 * j] + bs[2 * j + 1]);
		acc = _mm256_fmadd_ps(_mm256_set1_ps(H2F(b) * xd[i]), _mm256_cvtepi32_ps(isum), acc);
		mins += H2F(b + 2) * xd[i] * (float)summ;
	}
	return hsum256(acc) - mins;
}

T256 static float q6k_row_256(const uint8_t *b, long nb, const int8_t *q, const float *xd, const int16_t *xs) {
	const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
	__m256 acc = _mm256_setzero_ps();
	for (long i = 0; i < nb; i++, b += 210) {
		const uint8_t *ql = b, *qh = b + 128;
		const int8_t *sc = (const int8_t *)(b + 192);
		const int8_t *x = q + 256 * i;
		__m256i isum = _mm256_setzero_si256();
		for (int n = 0; n < 2; n++) {
			__m256i l0 = _mm256_loadu_si256((const __m256i *)(ql + 64 * n));
			__m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 64 * n + 32));
			__m256i h = _mm256_loadu_si256((const __m256i *)(qh + 32 * n));
			__m256i qv[4] = {
				_mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, m3), 4)),
				_mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4)),
				_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4)),
				_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4)),
			};
			for (int k = 0; k < 4; k++) {
				int g = 8 * n + 2 * k;
				__m256i s16 = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
				__m256i p = _mm256_maddubs_epi16(qv[k], _mm256_loadu_si256((const __m256i *)(x + 128 * n + 32 * k)));
				isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, s16));
			}
		}
		__m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xs + 16 * i)), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc)));
		isum = _mm256_sub_epi32(isum, _mm256_slli_epi32(off, 5));
		acc = _mm256_fmadd_ps(_mm256_set1_ps(H2F(b + 208) * xd[i]), _mm256_cvtepi32_ps(isum), acc);
	}
	return hsum256(acc);
}

// Rows o0..o1 of W (type 8: Q8_0, 12: Q4_K, 13: Q5_K, 14: Q6_K) times each
// of the n quantized activation rows: y[r*yRows+o] (+)= W[o]·x[r]. The
// weight row is read once and stays in L1 for all n activation rows.
#define DRIVER(name, attr, q80, q4k, q6k) \
attr static void name(int t, const uint8_t *w, long rowBytes, long cols, const int8_t *q, const float *xd, const int16_t *xs, \
		long n, float *y, long yRows, long o0, long o1, int acc) { \
	long nb = t == 8 ? cols / 32 : cols / 256; \
	for (long o = o0; o < o1; o++) { \
		const uint8_t *b = w + o * rowBytes; \
		for (long r = 0; r < n; r++) { \
			const int8_t *qr = q + r * cols; \
			const float *dr = xd + r * nb; \
			const int16_t *sr = xs + r * (cols / 16); \
			float s; \
			switch (t) { \
			case 8: s = q80(b, nb, qr, dr); break; \
			case 14: s = q6k(b, nb, qr, dr, sr); break; \
			default: s = q4k(b, nb, qr, dr, sr, t == 13); \
			} \
			float *yo = y + r * yRows + o; \
			*yo = acc ? *yo + s : s; \
		} \
	} \
}
DRIVER(qdot_vnni, T512, q8_0_row_512, q4k_row_512, q6k_row_512)
DRIVER(qdot_avx2, T256, q8_0_row_256, q4k_row_256, q6k_row_256)

// The k-quant kernels for several activation rows (batched streams): each
// super-block of the weight row unpacked once, then dotted with every row
// (n <= 16), each row's sums formed in the single-row kernels' order (the
// same bits).
T512 static void q4k_rows_512(const uint8_t *b, long nb, const int8_t *q, const float *xd, const int16_t *xs, int five,
		long n, long cols, float *out) {
	const __m512i m4 = _mm512_set1_epi8(15), one = _mm512_set1_epi8(1), zero = _mm512_setzero_si512();
	const __m512i idx[4] = {
		_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2),
		_mm512_setr_epi32(1, 1, 1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3),
		_mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 6, 6, 6, 6, 6, 6, 6, 6),
		_mm512_setr_epi32(5, 5, 5, 5, 5, 5, 5, 5, 7, 7, 7, 7, 7, 7, 7, 7),
	};
	const __m512i midx = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
	const long bb = five ? 176 : 144;
	__m512 acc[16], macc[16];
	for (long r = 0; r < n; r++)
		acc[r] = macc[r] = _mm512_setzero_ps();
	for (long i = 0; i < nb; i++, b += bb) {
		uint32_t u[4];
		k4_scales32(b + 4, u);
		__m512i scv = _mm512_cvtepu8_epi32(_mm_set_epi32(u[3], u[2], u[1], u[0]));
		__m512i sv[4], wv[4];
		for (int k = 0; k < 4; k++)
			sv[k] = _mm512_permutexvar_epi32(idx[k], scv);
		__m512i mv = _mm512_permutexvar_epi32(midx, scv);
		const uint8_t *qs = b + (five ? 48 : 16);
		__m512i hh = zero;
		if (five) {
			__m256i h = _mm256_loadu_si256((const __m256i *)(b + 16));
			hh = _mm512_inserti64x4(_mm512_castsi256_si512(h), h, 1);
		}
		for (int jj = 0; jj < 2; jj++) {
			__m512i w = _mm512_loadu_si512(qs + 64 * jj);
			__m512i lo = _mm512_and_si512(w, m4), hi = _mm512_and_si512(_mm512_srli_epi16(w, 4), m4);
			if (five) {
				__m512i sl = _mm512_mask_blend_epi16(0xFFFF0000, _mm512_set1_epi16(4 * jj), _mm512_set1_epi16(4 * jj + 2));
				__m512i sh = _mm512_add_epi16(sl, _mm512_set1_epi16(1));
				lo = _mm512_or_si512(lo, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hh, sl), one), 4));
				hi = _mm512_or_si512(hi, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(hh, sh), one), 4));
			}
			wv[2 * jj] = lo;
			wv[2 * jj + 1] = hi;
		}
		const float fd = H2F(b), fm = H2F(b + 2);
		for (long r = 0; r < n; r++) {
			const int8_t *x = q + r * cols + 256 * i;
			__m512i isum = zero;
			for (int jj = 0; jj < 2; jj++) {
				const int8_t *xj = x + 128 * jj;
				__m512i xa = _mm512_loadu_si512(xj), xb = _mm512_loadu_si512(xj + 64);
				__m512i xlo = _mm512_shuffle_i64x2(xa, xb, 0x44), xhi = _mm512_shuffle_i64x2(xa, xb, 0xEE);
				__m512i dl = _mm512_dpbusd_epi32(zero, wv[2 * jj], xlo), dh = _mm512_dpbusd_epi32(zero, wv[2 * jj + 1], xhi);
				isum = _mm512_add_epi32(isum, _mm512_madd_epi16(dl, sv[2 * jj]));
				isum = _mm512_add_epi32(isum, _mm512_madd_epi16(dh, sv[2 * jj + 1]));
			}
			__m512i bsv = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(xs + r * (cols / 16) + 16 * i)));
			__m512i summ = _mm512_madd_epi16(bsv, mv);
			float dx = xd[r * nb + i];
			acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(fd * dx), _mm512_cvtepi32_ps(isum), acc[r]);
			macc[r] = _mm512_fmadd_ps(_mm512_set1_ps(fm * dx), _mm512_cvtepi32_ps(summ), macc[r]);
		}
	}
	for (long r = 0; r < n; r++)
		out[r] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[r], macc[r]));
}

T512 static void q6k_rows_512(const uint8_t *b, long nb, const int8_t *q, const float *xd, const int16_t *xs,
		long n, long cols, float *out) {
	const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3), zero = _mm512_setzero_si512();
	const __m512i idx[4] = {
		_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
		_mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7),
		_mm512_setr_epi32(8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11),
		_mm512_setr_epi32(12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15),
	};
	__m512 acc[16];
	for (long r = 0; r < n; r++)
		acc[r] = _mm512_setzero_ps();
	for (long i = 0; i < nb; i++, b += 210) {
		const uint8_t *ql = b, *qh = b + 128;
		__m512i scv = _mm512_and_si512(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 192))), _mm512_set1_epi32(0xFFFF));
		__m512i sv[4], wv[4];
		for (int k = 0; k < 4; k++)
			sv[k] = _mm512_permutexvar_epi32(idx[k], scv);
		for (int nn = 0; nn < 2; nn++) {
			__m512i l = _mm512_loadu_si512(ql + 64 * nn);
			__m256i h = _mm256_loadu_si256((const __m256i *)(qh + 32 * nn));
			__m512i ha = _mm512_inserti64x4(_mm512_castsi256_si512(h), _mm256_srli_epi16(h, 2), 1);
			__m512i hb = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_srli_epi16(h, 4)), _mm256_srli_epi16(h, 6), 1);
			wv[2 * nn] = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(_mm512_and_si512(ha, m3), 4));
			wv[2 * nn + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), _mm512_slli_epi16(_mm512_and_si512(hb, m3), 4));
		}
		const float fd = H2F(b + 208);
		for (long r = 0; r < n; r++) {
			const int8_t *x = q + r * cols + 256 * i;
			__m512i isum = zero;
			for (int nn = 0; nn < 2; nn++) {
				__m512i da = _mm512_dpbusd_epi32(zero, wv[2 * nn], _mm512_loadu_si512(x + 128 * nn));
				__m512i db = _mm512_dpbusd_epi32(zero, wv[2 * nn + 1], _mm512_loadu_si512(x + 128 * nn + 64));
				isum = _mm512_add_epi32(isum, _mm512_madd_epi16(da, sv[2 * nn]));
				isum = _mm512_add_epi32(isum, _mm512_madd_epi16(db, sv[2 * nn + 1]));
			}
			__m512i bsv = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(xs + r * (cols / 16) + 16 * i)));
			isum = _mm512_sub_epi32(isum, _mm512_slli_epi32(_mm512_madd_epi16(bsv, scv), 5));
			acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(fd * xd[r * nb + i]), _mm512_cvtepi32_ps(isum), acc[r]);
		}
	}
	for (long r = 0; r < n; r++)
		out[r] = _mm512_reduce_add_ps(acc[r]);
}

// qdot_vnni_multi is qdot_vnni for n >= 2 rows of k-quant products: the
// weight row's super-blocks unpacked once for up to 16 activation rows.
T512 static void qdot_vnni_multi(int t, const uint8_t *w, long rowBytes, long cols, const int8_t *q, const float *xd, const int16_t *xs,
		long n, float *y, long yRows, long o0, long o1, int acc) {
	long nb = cols / 256;
	float out[16];
	for (long o = o0; o < o1; o++) {
		const uint8_t *b = w + o * rowBytes;
		for (long r0 = 0; r0 < n; r0 += 16) {
			long m = n - r0 < 16 ? n - r0 : 16;
			if (t == 14)
				q6k_rows_512(b, nb, q + r0 * cols, xd + r0 * nb, xs + r0 * (cols / 16), m, cols, out);
			else
				q4k_rows_512(b, nb, q + r0 * cols, xd + r0 * nb, xs + r0 * (cols / 16), t == 13, m, cols, out);
			for (long r = 0; r < m; r++) {
				float *yo = y + (r0 + r) * yRows + o;
				*yo = acc ? *yo + out[r] : out[r];
			}
		}
	}
}

// Q8_K activations (see quantizeQ8K): the same float32 operations and
// rounding, 16 elements a step.
T512 static void quant_q8k(int8_t *qs, float *d, int16_t *bs, const float *x, long k) {
	for (long b = 0; b < k / 256; b++, x += 256, qs += 256, bs += 16) {
		__m512 am = _mm512_setzero_ps();
		for (int j = 0; j < 256; j += 16)
			am = _mm512_max_ps(am, _mm512_abs_ps(_mm512_loadu_ps(x + j)));
		float amax = _mm512_reduce_max_ps(am);
		if (amax == 0) {
			d[b] = 0;
			memset(qs, 0, 256);
			memset(bs, 0, 32);
			continue;
		}
		float mx = 0;
		for (int j = 0; j < 256; j++)
			if (x[j] == amax || x[j] == -amax) { mx = x[j]; break; }
		float iscale = -127.f / mx;
		__m512 is = _mm512_set1_ps(iscale);
		const __m512i top = _mm512_set1_epi32(127);
		for (int g = 0; g < 16; g++) {
			__m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * g), is), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
			__m512i iv = _mm512_min_epi32(_mm512_cvtps_epi32(v), top);
			_mm_storeu_si128((__m128i *)(qs + 16 * g), _mm512_cvtepi32_epi8(iv));
			bs[g] = (int16_t)_mm512_reduce_add_epi32(iv);
		}
		d[b] = 1 / iscale;
	}
}

T512 static void quant_q8_0(int8_t *qs, float *d, const float *x, long k) {
	for (long b = 0; b < k / 32; b++, x += 32, qs += 32) {
		__m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
		float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
		float dd = amax / 127.f;
		float id = dd != 0 ? 1.f / dd : 0.f;
		__m512 is = _mm512_set1_ps(id);
		__m512i i0 = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v0, is), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
		__m512i i1 = _mm512_cvtps_epi32(_mm512_roundscale_ps(_mm512_mul_ps(v1, is), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
		_mm_storeu_si128((__m128i *)qs, _mm512_cvtepi32_epi8(i0));
		_mm_storeu_si128((__m128i *)(qs + 16), _mm512_cvtepi32_epi8(i1));
		d[b] = _cvtsh_ss(_cvtss_sh(dd, _MM_FROUND_TO_NEAREST_INT));
	}
}
*/
import "C"

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

var (
	useVNNI = useAVX512 && cpu.X86.HasAVX512VNNI && cpu.X86.HasAVX512DQ
	useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C
)

// intDotRows runs the integer kernel dotKernel names over rows [o0, o1).
func (m *Matrix) intDotRows(y []float32, a *q8Row, n, o0, o1 int, acc bool) {
	if dotKernel == kernInt8Go {
		m.intDotRowsGo(y, a, n, o0, o1, acc)
		return
	}
	ac := C.int(0)
	if acc {
		ac = 1
	}
	var bs *C.int16_t
	if len(a.bs) > 0 {
		bs = (*C.int16_t)(unsafe.Pointer(&a.bs[0]))
	}
	t, w, rb, cols := C.int(m.Type), (*C.uint8_t)(unsafe.Pointer(&m.Data[0])), C.long(m.rowBytes), C.long(m.Cols)
	q, d, yp := (*C.int8_t)(unsafe.Pointer(&a.qs[0])), (*C.float)(&a.d[0]), (*C.float)(&y[0])
	if dotKernel == kernInt8VNNI && n > 1 && m.Type != Q8_0 {
		C.qdot_vnni_multi(t, w, rb, cols, q, d, bs, C.long(n), yp, C.long(m.Rows), C.long(o0), C.long(o1), ac)
	} else if dotKernel == kernInt8VNNI {
		C.qdot_vnni(t, w, rb, cols, q, d, bs, C.long(n), yp, C.long(m.Rows), C.long(o0), C.long(o1), ac)
	} else {
		C.qdot_avx2(t, w, rb, cols, q, d, bs, C.long(n), yp, C.long(m.Rows), C.long(o0), C.long(o1), ac)
	}
}

// quantizeQ8KC is quantizeQ8K in C where the CPU has AVX-512 VNNI (the
// same bits); false when it did not run.
func quantizeQ8KC(qs []int8, d []float32, bs []int16, x []float32) bool {
	if dotKernel != kernInt8VNNI || len(x) == 0 {
		return false
	}
	C.quant_q8k((*C.int8_t)(unsafe.Pointer(&qs[0])), (*C.float)(&d[0]), (*C.int16_t)(unsafe.Pointer(&bs[0])), (*C.float)(&x[0]), C.long(len(x)))
	return true
}

func quantizeQ8_0C(qs []int8, d []float32, x []float32) bool {
	if dotKernel != kernInt8VNNI || len(x) == 0 {
		return false
	}
	C.quant_q8_0((*C.int8_t)(unsafe.Pointer(&qs[0])), (*C.float)(&d[0]), (*C.float)(&x[0]), C.long(len(x)))
	return true
}
