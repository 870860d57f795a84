package cpu

/*
#cgo CFLAGS: -O3
#include <math.h>
#include <stdint.h>

// Blocked fp32 attention of a prompt chunk over the KV cache. The decode
// kernel (attention_cached_simd.go) streams every key once per (query,
// head) and reduces each dot product horizontally: fine for one query,
// memory- and latency-bound for a 64-token chunk at a 32k-token cache. Here
// a task is one KV head and a block of query rows with all the query heads
// that share it, M = rows·group columns, and each 64-key block of the cache
// is read once per task and used by all M queries in register-blocked
// products:
//
//   Sᵀ(keys, M)  = K_blk · Qᵀ            (Qᵀ packed once per task, scaled)
//   Pᵀ           = exp(Sᵀ − m), online softmax per column
//   Oᵀ(hd, M)   += V_blkᵀ · Pᵀ
//
// Queries are the columns everywhere, so the running max, sum and rescale
// of each query are 16-lane vector operations, and no key or value block
// is transposed or copied: the products broadcast K[j][e] and V[j][e]
// straight from the cache rows. All arithmetic is fp32 (FMA), so results
// match the decode kernel and the Go loop to rounding.

#define PF_KB 64 // keys per block
#define PF_R 8   // rows of a product micro-tile
#define PF_NV 3  // 16-lane column vectors of a micro-tile

#if defined(__x86_64__)
#include <immintrin.h>

#include "simd.h"

// pf_tile: C[r][c] (+)= Σ_k A[r·ars + k·aks] · B[k·ldb + c] for r < R and
// the NV·16 columns at c0. R and NV are constants at every call site.
INLINE AVX512 void pf_tile(float *c, long ldc, const float *a, long ars, long aks, const float *b, long ldb, long K,
		int R, int NV, int acc) {
	__m512 s[PF_R][PF_NV];
	for (int r = 0; r < R; r++)
		for (int v = 0; v < NV; v++) s[r][v] = acc ? _mm512_loadu_ps(c + r * ldc + 16 * v) : _mm512_setzero_ps();
	for (long k = 0; k < K; k++) {
		__m512 bv[PF_NV];
		for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
		for (int r = 0; r < R; r++) {
			__m512 av = _mm512_set1_ps(a[r * ars + k * aks]);
			for (int v = 0; v < NV; v++) s[r][v] = _mm512_fmadd_ps(av, bv[v], s[r][v]);
		}
	}
	for (int r = 0; r < R; r++)
		for (int v = 0; v < NV; v++) _mm512_storeu_ps(c + r * ldc + 16 * v, s[r][v]);
}

#define PF_TILE_R(R)                                                                   \
	switch (nv) {                                                                      \
	case 3: pf_tile(c, ldc, a, ars, aks, b, ldb, K, R, 3, acc); break;                \
	case 2: pf_tile(c, ldc, a, ars, aks, b, ldb, K, R, 2, acc); break;                \
	default: pf_tile(c, ldc, a, ars, aks, b, ldb, K, R, 1, acc); break;               \
	}

// pf_gemm: C(rows, cols) (+)= A(rows, K) · B(K, cols), A read at
// a[r·ars + k·aks], cols a multiple of 16.
static AVX512 void pf_gemm(float *c0, long ldc, const float *a0, long ars, long aks, const float *b0, long ldb,
		long rows, long cols, long K, int acc) {
	for (long n = 0; n < cols; n += 16 * PF_NV) {
		long nv = (cols - n) / 16 < PF_NV ? (cols - n) / 16 : PF_NV;
		const float *b = b0 + n;
		for (long m = 0; m < rows; m += PF_R) {
			float *c = c0 + m * ldc + n;
			const float *a = a0 + m * ars;
			switch (rows - m < PF_R ? rows - m : PF_R) {
			case 8: PF_TILE_R(8) break;
			case 7: PF_TILE_R(7) break;
			case 6: PF_TILE_R(6) break;
			case 5: PF_TILE_R(5) break;
			case 4: PF_TILE_R(4) break;
			case 3: PF_TILE_R(3) break;
			case 2: PF_TILE_R(2) break;
			default: PF_TILE_R(1) break;
			}
		}
	}
}

// pf_ws: floats of one task's workspace for Mp columns: Qᵀ, Sᵀ/Pᵀ, Oᵀ,
// and per column the running max and sum, first and last visible key.
static long pf_ws(long Mp, long hd) { return hd * Mp + PF_KB * Mp + hd * Mp + 4 * Mp; }

// pf_task: rows [i0,i1) of the chunk (positions start+i) and the ng query
// heads h0.. of KV head kh. Column x of the task is row i0 + x/ng, head
// h0 + x%ng.
static AVX512 void pf_task(float *out, const float *q, const float *kc, const float *vc, long start, long i0, long i1,
		long h0, long ng, long nh, long nkv, long hd, long window, long kh, float scale, float *ws) {
	long M = (i1 - i0) * ng, Mp = (M + 15) / 16 * 16, kvs = nkv * hd;
	float *qt = ws, *st = qt + hd * Mp, *ot = st + PF_KB * Mp, *mx = ot + hd * Mp, *l = mx + Mp;
	int32_t *lo = (int32_t *)(l + Mp), *hi = lo + Mp;
	for (long x = 0; x < Mp; x++) {
		long i = i0 + x / ng, t = start + i;
		int live = x < M;
		for (long e = 0; e < hd; e++) qt[e * Mp + x] = live ? q[(i * nh + h0 + x % ng) * hd + e] * scale : 0;
		mx[x] = -INFINITY;
		l[x] = 0;
		// A padding column sees no key: lo > hi.
		lo[x] = live ? (window > 0 && t - window + 1 > 0 ? t - window + 1 : 0) : 1;
		hi[x] = live ? t : 0;
	}
	for (long x = 0; x < hd * Mp; x++) ot[x] = 0;
	long tmin = start + i0, tmax = start + i1 - 1;
	long lomin = window > 0 && tmin - window + 1 > 0 ? tmin - window + 1 : 0;
	long lomax = window > 0 && tmax - window + 1 > 0 ? tmax - window + 1 : 0;
	const float *kh0 = kc + kh * hd, *vh0 = vc + kh * hd;
	for (long j0 = lomin / PF_KB * PF_KB; j0 <= tmax; j0 += PF_KB) {
		long nk = tmax + 1 - j0 < PF_KB ? tmax + 1 - j0 : PF_KB;
		// Every column sees every key of the block: no masks.
		// (Padding columns' outputs are never read.)
		int full = j0 >= lomax && j0 + nk - 1 <= tmin;
		pf_gemm(st, Mp, kh0 + j0 * kvs, kvs, 1, qt, Mp, nk, Mp, hd, 0);
		for (long x = 0; x < Mp; x += 16) {
			__m512 m0 = _mm512_loadu_ps(mx + x), bm = _mm512_set1_ps(-INFINITY);
			__m512i vlo = _mm512_loadu_si512(lo + x), vhi = _mm512_loadu_si512(hi + x);
			for (long j = 0; j < nk; j++) {
				__m512 s = _mm512_loadu_ps(st + j * Mp + x);
				if (!full) {
					__m512i vj = _mm512_set1_epi32((int32_t)(j0 + j));
					__mmask16 ok = _mm512_cmp_epi32_mask(vlo, vj, _MM_CMPINT_LE) & _mm512_cmp_epi32_mask(vj, vhi, _MM_CMPINT_LE);
					s = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), ok, s);
					_mm512_storeu_ps(st + j * Mp + x, s);
				}
				bm = _mm512_max_ps(bm, s);
			}
			__m512 mn = _mm512_max_ps(m0, bm);
			// Columns that have seen no key yet keep m = -inf: subtract 0
			// there (their scores are all -inf, so P = 0), not -inf (NaN).
			__mmask16 none = _mm512_cmp_ps_mask(mn, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
			__m512 ms = _mm512_mask_mov_ps(mn, none, _mm512_setzero_ps());
			__m512 alpha = exp16(_mm512_sub_ps(m0, ms)); // exp(-inf) = 0: nothing summed before
			__m512 sum = _mm512_setzero_ps();
			for (long j = 0; j < nk; j++) {
				__m512 p = exp16(_mm512_sub_ps(_mm512_loadu_ps(st + j * Mp + x), ms));
				sum = _mm512_add_ps(sum, p);
				_mm512_storeu_ps(st + j * Mp + x, p);
			}
			_mm512_storeu_ps(l + x, _mm512_fmadd_ps(_mm512_loadu_ps(l + x), alpha, sum));
			_mm512_storeu_ps(mx + x, mn);
			if (_mm512_cmp_ps_mask(alpha, _mm512_set1_ps(1.0f), _CMP_NEQ_UQ) &&
					_mm512_cmp_ps_mask(m0, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ)) {
				// Rescale what was summed under the old max (columns
				// still at -inf hold zeros).
				for (long e = 0; e < hd; e++)
					_mm512_storeu_ps(ot + e * Mp + x, _mm512_mul_ps(_mm512_loadu_ps(ot + e * Mp + x), alpha));
			}
		}
		pf_gemm(ot, Mp, vh0 + j0 * kvs, 1, kvs, st, Mp, hd, Mp, nk, 1);
	}
	for (long x = 0; x < M; x++) {
		long i = i0 + x / ng;
		float *o = out + (i * nh + h0 + x % ng) * hd;
		float inv = 1 / l[x];
		for (long e = 0; e < hd; e++) o[e] = ot[e * Mp + x] * inv;
	}
}

static int hone_pf_avx512(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#else
static long pf_ws(long Mp, long hd) { return 0; }
static void pf_task(float *out, const float *q, const float *kc, const float *vc, long start, long i0, long i1,
		long h0, long ng, long nh, long nkv, long hd, long window, long kh, float scale, float *ws) {}
static int hone_pf_avx512(void) { return 0; }
#endif
*/
import "C"

import (
	"math"
	"os"
	"slices"
)

// prefillSIMD says whether AttentionCached runs prompt chunks of at least
// prefillMinRows queries on the blocked kernel above; tests turn it off,
// and so does HONE_CPU_KERNELS=noprefill (or =go), for A/B runs: chunks
// then take the streaming kernel.
var prefillSIMD = C.hone_pf_avx512() != 0 && !slices.Contains([]string{"go", "noprefill"}, os.Getenv("HONE_CPU_KERNELS"))

// prefillMinRows is the fewest queries of one call that take the blocked
// kernel. Below it (decode steps: one query per sequence) most of a
// task's 16-query vectors would be padding; decode keeps the streaming
// kernel, its speed and exactly its numbers.
const prefillMinRows = 8

// prefillColumns is the most (query, head) columns of one task: enough
// to make each key block's read pay for itself many times over, few enough
// that the task's Qᵀ, Sᵀ and Oᵀ stay in the L2 cache.
const prefillColumns = 192

// attentionPrefill is AttentionCached for a chunk of nq ≥ prefillMinRows
// queries on the blocked kernel: one task per KV head and block of query
// rows, all of the KV head's query heads together.
func (d *Device) attentionPrefill(out, q, kc, vc []float32, start, nq, nh, nkv, hd, window int) {
	group := nh / nkv
	T := start + nq
	_, _, _, _ = out[nq*nh*hd-1], q[nq*nh*hd-1], kc[T*nkv*hd-1], vc[T*nkv*hd-1] // bounds: fail in Go, not in C
	// Rows per task: as many as prefillColumns allows, fewer when that
	// would leave workers idle.
	rows := max(1, prefillColumns/group)
	if tasks := nkv * ((nq + rows - 1) / rows); tasks < d.threads {
		per := (d.threads + nkv - 1) / nkv // row blocks per KV head
		rows = max(1, (nq+per-1)/per)
	}
	ng := min(group, prefillColumns) // query heads of one task
	hb := (group + ng - 1) / ng
	rb := (nq + rows - 1) / rows
	mp := (rows*ng + 15) / 16 * 16
	wsN := int(C.pf_ws(C.long(mp), C.long(hd)))
	ws := make([]float32, min(d.threads, nkv*rb*hb)*wsN)
	scale := C.float(1 / math.Sqrt(float64(hd)))
	d.dynamicW(nkv*rb*hb, func(w, task int) {
		kh, r, g := task/(rb*hb), task/hb%rb, task%hb
		i0, i1 := r*rows, min((r+1)*rows, nq)
		h0 := kh*group + g*ng
		n := min(ng, kh*group+group-h0)
		C.pf_task(fp(out), fp(q), fp(kc), fp(vc), C.long(start), C.long(i0), C.long(i1), C.long(h0), C.long(n),
			C.long(nh), C.long(nkv), C.long(hd), C.long(window), C.long(kh), scale, fp(ws[w*wsN:]))
	})
}
