// Shared by the cgo preambles of this package's AVX-512 kernels (simd.go,
// attention_cached_simd.go): target and inlining attributes, the tail
// mask, and exp32 on 16 lanes. x86-64 only; include after <immintrin.h>.
#ifndef HONE_CPU_SIMD_H
#define HONE_CPU_SIMD_H

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define INLINE static inline __attribute__((always_inline))

INLINE AVX512 __mmask16 tailmask(long n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

// exp16 is exp32 (exp.go) on 16 lanes, operation for operation (bit for
// bit where the including file turns off fp-contract, as simd.go does).
INLINE AVX512 __m512 exp16(__m512 x) {
	const __m512 round = _mm512_set1_ps(12582912.0f);
	__m512 k = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), round), round);
	__m512 r = _mm512_sub_ps(_mm512_sub_ps(x, _mm512_mul_ps(k, _mm512_set1_ps(0.693359375f))),
		_mm512_mul_ps(k, _mm512_set1_ps(-2.12194440e-4f)));
	__m512 p = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(1.0f / 720.0f), r), _mm512_set1_ps(1.0f / 120.0f));
	p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 24.0f));
	p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f / 6.0f));
	p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(0.5f));
	p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
	p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.0f));
	__m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(k), _mm512_set1_epi32(127)), 23);
	p = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
	p = _mm512_mask_mov_ps(p, _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ), _mm512_setzero_ps());
	return _mm512_mask_mov_ps(p, _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.7f), _CMP_GT_OQ), _mm512_set1_ps(INFINITY));
}

#endif
