package cpu

/*
#include <stdint.h>
#include <immintrin.h>

// A block's 16 code values times its scale, rounded to bf16 (nearest
// even) and kept as the fp32 values they are: widening back is exact.
static inline void hone_nf4_lut(float *lut, const float *code, float s) {
	for (int i = 0; i < 16; i++) {
		union { float f; uint32_t u; } v = { code[i] * s };
		v.u = (v.u + 0x7fff + ((v.u >> 16) & 1)) & 0xffff0000u;
		lut[i] = v.f;
	}
}

// hone_nf4_bf16_scalar dequantizes nblocks blocks of 64 (32 packed
// bytes each, the first value in the high nibble) to bf16.
static void hone_nf4_bf16_scalar(uint16_t *dst, const uint8_t *packed, const float *scales, long nblocks, const float *code) {
	for (long b = 0; b < nblocks; b++) {
		float lutf[16];
		uint16_t lut[16];
		hone_nf4_lut(lutf, code, scales[b]);
		for (int i = 0; i < 16; i++) {
			union { float f; uint32_t u; } v = { lutf[i] };
			lut[i] = (uint16_t)(v.u >> 16);
		}
		const uint8_t *p = packed + b * 32;
		uint16_t *d = dst + b * 64;
		for (int j = 0; j < 32; j++) {
			d[2 * j] = lut[p[j] >> 4];
			d[2 * j + 1] = lut[p[j] & 15];
		}
	}
}

// The AVX-512 form: 16 values at a time, each packed byte duplicated,
// shifted by 4 or 0 to its nibble, and looked up with one permute in the
// block's table of 16.
__attribute__((target("avx512f,avx512bw,ssse3")))
static void hone_nf4_bf16_avx512(uint16_t *dst, const uint8_t *packed, const float *scales, long nblocks, const float *code) {
	const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
	const __m512i shift = _mm512_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
	const __m512i m15 = _mm512_set1_epi32(15);
	float lutf[16];
	for (long b = 0; b < nblocks; b++) {
		hone_nf4_lut(lutf, code, scales[b]);
		__m512 lut = _mm512_loadu_ps(lutf);
		const uint8_t *p = packed + b * 32;
		uint16_t *d = dst + b * 64;
		for (int k = 0; k < 4; k++) {
			__m128i bytes = _mm_loadl_epi64((const __m128i *)(p + 8 * k));
			__m512i idx = _mm512_cvtepu8_epi32(_mm_shuffle_epi8(bytes, dup));
			idx = _mm512_and_si512(_mm512_srlv_epi32(idx, shift), m15);
			__m512i v = _mm512_castps_si512(_mm512_permutexvar_ps(idx, lut));
			_mm256_storeu_si256((__m256i *)(d + 16 * k), _mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
		}
	}
}

static int hone_nf4_avx512 = -1;

static void hone_nf4_bf16(uint16_t *dst, const uint8_t *packed, const float *scales, long nblocks, const float *code) {
	if (hone_nf4_avx512 < 0) {
		__builtin_cpu_init();
		hone_nf4_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
	}
	if (hone_nf4_avx512) {
		hone_nf4_bf16_avx512(dst, packed, scales, nblocks, code);
	} else {
		hone_nf4_bf16_scalar(dst, packed, scales, nblocks, code);
	}
}

static void hone_nf4_bf16_force_scalar(uint16_t *dst, const uint8_t *packed, const float *scales, long nblocks, const float *code) {
	hone_nf4_bf16_scalar(dst, packed, scales, nblocks, code);
}

// hone_nf4_matvec_scalar is, for the n rows of x (cols each) and the
// rows of W (cols/64 blocks each, a scale per block), y[r*ldy+o] (+)=
// Σ_b scale(o,b)·Σ_j code[nibble]·x: each block's codes dotted with x
// first, then multiplied by its scale.
static void hone_nf4_matvec_scalar(float *y, long ldy, const float *x, long n, long rows, long cols,
		const uint8_t *packed, const float *scales, const float *code, int acc) {
	long nb = cols / 64;
	for (long o = 0; o < rows; o++) {
		for (long r = 0; r < n; r++) {
			const float *xr = x + r * cols;
			float sum = 0;
			for (long b = 0; b < nb; b++) {
				const uint8_t *p = packed + (o * nb + b) * 32;
				const float *xb = xr + b * 64;
				float s = 0;
				for (int j = 0; j < 32; j++) {
					s += code[p[j] >> 4] * xb[2 * j] + code[p[j] & 15] * xb[2 * j + 1];
				}
				sum += scales[o * nb + b] * s;
			}
			y[r * ldy + o] = acc ? y[r * ldy + o] + sum : sum;
		}
	}
}

// The AVX-512 form: a block's 64 codes looked up 16 at a time (as in
// hone_nf4_bf16_avx512, from the unscaled table), dotted with up to 4
// rows of x in 16 lanes, each row's block sum then scaled into its total.
__attribute__((target("avx512f,avx512bw,ssse3")))
static void hone_nf4_matvec_avx512(float *y, long ldy, const float *x, long n, long rows, long cols,
		const uint8_t *packed, const float *scales, const float *code, int acc) {
	const __m128i dup = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
	const __m512i shift = _mm512_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
	const __m512i m15 = _mm512_set1_epi32(15);
	const __m512 table = _mm512_loadu_ps(code);
	long nb = cols / 64;
	for (long o = 0; o < rows; o++) {
		for (long r0 = 0; r0 < n; r0 += 4) {
			int nr = n - r0 < 4 ? (int)(n - r0) : 4;
			__m512 tot[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
			for (long b = 0; b < nb; b++) {
				const uint8_t *p = packed + (o * nb + b) * 32;
				__m512 c[4];
				for (int k = 0; k < 4; k++) {
					__m128i bytes = _mm_loadl_epi64((const __m128i *)(p + 8 * k));
					__m512i idx = _mm512_cvtepu8_epi32(_mm_shuffle_epi8(bytes, dup));
					c[k] = _mm512_permutexvar_ps(_mm512_and_si512(_mm512_srlv_epi32(idx, shift), m15), table);
				}
				__m512 s = _mm512_set1_ps(scales[o * nb + b]);
				for (int r = 0; r < nr; r++) {
					const float *xb = x + (r0 + r) * cols + b * 64;
					__m512 part = _mm512_mul_ps(c[0], _mm512_loadu_ps(xb));
					part = _mm512_fmadd_ps(c[1], _mm512_loadu_ps(xb + 16), part);
					part = _mm512_fmadd_ps(c[2], _mm512_loadu_ps(xb + 32), part);
					part = _mm512_fmadd_ps(c[3], _mm512_loadu_ps(xb + 48), part);
					tot[r] = _mm512_fmadd_ps(part, s, tot[r]);
				}
			}
			for (int r = 0; r < nr; r++) {
				float v = _mm512_reduce_add_ps(tot[r]);
				float *d = y + (r0 + r) * ldy + o;
				*d = acc ? *d + v : v;
			}
		}
	}
}

static void hone_nf4_matvec(float *y, long ldy, const float *x, long n, long rows, long cols,
		const uint8_t *packed, const float *scales, const float *code, int acc, int scalar) {
	if (hone_nf4_avx512 < 0) {
		__builtin_cpu_init();
		hone_nf4_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
	}
	if (hone_nf4_avx512 && !scalar) {
		hone_nf4_matvec_avx512(y, ldy, x, n, rows, cols, packed, scales, code, acc);
	} else {
		hone_nf4_matvec_scalar(y, ldy, x, n, rows, cols, packed, scales, code, acc);
	}
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// DequantizeNF4BF16 writes len(scales) blocks of 64 NF4 values (packed two
// to a byte, the first in the high nibble) into dst as bf16: code value
// times the block's scale, rounded to nearest even. It is the engine's
// NF4Kernels extra (see engine/nf4.go); the AVX-512 form runs where the
// CPU has it, plain C elsewhere.
func (d *Device) DequantizeNF4BF16(dst []uint16, packed []byte, scales []float32, code *[16]float32) {
	nf4BF16(dst, packed, scales, code, false)
}

func nf4BF16(dst []uint16, packed []byte, scales []float32, code *[16]float32, scalar bool) {
	n := len(scales)
	if len(dst) != 64*n || len(packed) != 32*n {
		panic(fmt.Sprintf("cpu: DequantizeNF4BF16: %d values and %d bytes for %d blocks", len(dst), len(packed), n))
	}
	if n == 0 {
		return
	}
	d, p := (*C.uint16_t)(unsafe.Pointer(&dst[0])), (*C.uint8_t)(unsafe.Pointer(&packed[0]))
	sc, c := (*C.float)(unsafe.Pointer(&scales[0])), (*C.float)(unsafe.Pointer(&code[0]))
	if scalar {
		C.hone_nf4_bf16_force_scalar(d, p, sc, C.long(n), c)
		return
	}
	C.hone_nf4_bf16(d, p, sc, C.long(n), c)
}

// MatVecNF4 computes, for the n rows of x (cols values each, cols a
// multiple of 64) and the rows of a matrix W held in NF4 (packed: 32
// bytes a block of 64, the first value in the high nibble; scales: one a
// block, cols/64 a row), y[r*ldy+o] (+)= Σ_k W[o][k]·x[r*cols+k] in fp32,
// W[o][k] being code[index] times its block's scale. It is the engine's
// NF4Kernels extra for decoding on an NF4 base; the AVX-512 form runs
// where the CPU has it, plain C elsewhere.
func (d *Device) MatVecNF4(y []float32, ldy int, x []float32, n, cols int, packed []byte, scales []float32, code *[16]float32, acc bool) {
	nf4MatVec(y, ldy, x, n, cols, packed, scales, code, acc, false)
}

func nf4MatVec(y []float32, ldy int, x []float32, n, cols int, packed []byte, scales []float32, code *[16]float32, acc, scalar bool) {
	if n == 0 || len(scales) == 0 {
		return
	}
	nb := cols / 64
	rows := len(scales) / max(nb, 1)
	if cols%64 != 0 || rows*nb != len(scales) || len(packed) != 32*len(scales) || len(x) < n*cols || len(y) < (n-1)*ldy+rows || ldy < rows {
		panic(fmt.Sprintf("cpu: MatVecNF4: %d scales, %d bytes, %d values of x and %d of y (row stride %d) for %d rows of x and %d columns", len(scales), len(packed), len(x), len(y), ldy, n, cols))
	}
	C.hone_nf4_matvec((*C.float)(unsafe.Pointer(&y[0])), C.long(ldy), (*C.float)(unsafe.Pointer(&x[0])), C.long(n), C.long(rows), C.long(cols),
		(*C.uint8_t)(unsafe.Pointer(&packed[0])), (*C.float)(unsafe.Pointer(&scales[0])), (*C.float)(unsafe.Pointer(&code[0])), cbool(acc), cbool(scalar))
}
