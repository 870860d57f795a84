package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Flash attention (AMX and AVX-512 BF16 paths) against the fp32 attention
// over the same bf16-rounded q, k, v and dO, so the difference is what
// the flash form adds. Its products are exact (bf16 × bf16 fits fp32) and
// accumulate in fp32; what it rounds is P to bf16 before P·V and dOᵀ·P
// (a relative 2⁻⁹ per element: |Σ δp·v| ≤ 2⁻⁹·Σ p|v|, so out and dV stay
// within 2⁻⁹ ≈ 2e-3 of the values they average, well inside 5e-3 of
// their largest) and dS before dS·K and Qᵀ·dS (the same 2⁻⁹ per element,
// but dS's rows sum to about zero, so relative to the largest dQ, dK the
// error grows by the cancellation: 1e-2). The log-sum-exp sums fp32
// exponentials of exact scores, rescaled once per key block: 2e-5.
// Packed documents (a document starting inside a block, blocks wholly
// before a document), grouped heads, sliding windows, T not a multiple of
// the 64-query block, head sizes needing padding (16) and peaked rows
// (queries ×12: most probabilities underflow to zero) are covered.
func TestFlashAttentionMatchesFP32OnRoundedInputs(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const B, T, nh, nkv = 2, 150, 4, 2
	docStart := make([]int32, B*T)
	for i := range docStart { // row 0: documents at 0, 37, 100; row 1: one
		if p := i % T; i < T && p >= 100 {
			docStart[i] = 100
		} else if i < T && p >= 37 {
			docStart[i] = 37
		}
	}
	round := func(x []float32) []float32 {
		for i, v := range x {
			x[i] = widenBF16(toBF16(v))
		}
		return x
	}
	paths := []struct {
		name string
		isa  int
	}{{"amx", 2}, {"avx512bf16", 1}}
	for _, tc := range []struct{ hd, qscale int }{{64, 1}, {16, 1}, {64, 12}} {
		hd := tc.hd
		q := randSlice(r, B*T*nh*hd)
		for i := range q { // peaked rows: exponents far below the max, probabilities underflow
			q[i] *= float32(tc.qscale)
		}
		q, k, v := round(q), round(randSlice(r, B*T*nkv*hd)), round(randSlice(r, B*T*nkv*hd))
		dout := round(randSlice(r, B*T*nh*hd))
		for _, window := range []int{0, 50} {
			ref := New(2)
			out, lse := make([]float32, len(q)), make([]float32, B*nh*T)
			dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
			ref.Attention(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
			ref.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
			want := [][]float32{out, lse, dq, dk, dv}
			for _, p := range paths {
				t.Run(fmt.Sprintf("%s/hd%d/q×%d/window%d", p.name, hd, tc.qscale, window), func(t *testing.T) {
					if flashISA < p.isa {
						t.Skipf("the CPU (or HONE_CPU_KERNELS) does not allow the %s path", p.name)
					}
					d := New(2)
					d.flash = p.isa
					out, lse := make([]float32, len(q)), make([]float32, B*nh*T)
					dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
					d.AttentionBF16(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
					d.AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
					for i, c := range []struct {
						name string
						got  []float32
						tol  float64
					}{{"out", out, 5e-3}, {"lse", lse, 2e-5}, {"dq", dq, 1e-2}, {"dk", dk, 1e-2}, {"dv", dv, 5e-3}} {
						e := maxRel(c.got, want[i])
						if e > c.tol {
							t.Errorf("%s differs by %.3g of its largest value (bound %g)", c.name, e, c.tol)
						}
						if testing.Verbose() {
							t.Logf("%s %.3g", c.name, e)
						}
					}
				})
			}
		}
	}
}

// TestFlashAVXKernelsMatchShared: the AVX-512 BF16 path's own forward
// (four query rows at a time from S through O += P·V) and backward (S and
// dP kept in registers, dQ's product once per sweep, Qᵀ and dOᵀ packed by
// block) do the same fp32 operations in the same order as the kernels
// they share with AMX, so the output, log-sum-exp and every gradient must
// be bit-identical, on the shapes of
// TestFlashAttentionMatchesFP32OnRoundedInputs plus a head size of 96
// (O's columns as 64 + 32) with 4 query heads per kv head.
func TestFlashAVXKernelsMatchShared(t *testing.T) {
	if flashISA < 1 {
		t.Skip("the CPU (or HONE_CPU_KERNELS) does not allow the avx512bf16 path")
	}
	r := rand.New(rand.NewPCG(13, 14))
	const B, T = 2, 150
	docStart := make([]int32, B*T)
	for i := range docStart {
		if p := i % T; i < T && p >= 100 {
			docStart[i] = 100
		} else if i < T && p >= 37 {
			docStart[i] = 37
		}
	}
	for _, tc := range []struct{ hd, qscale, nh, nkv int }{{64, 1, 4, 2}, {16, 1, 4, 2}, {64, 12, 4, 2}, {96, 1, 8, 2}} {
		hd, nh, nkv := tc.hd, tc.nh, tc.nkv
		q := randSlice(r, B*T*nh*hd)
		for i := range q {
			q[i] *= float32(tc.qscale)
		}
		k, v, dout := randSlice(r, B*T*nkv*hd), randSlice(r, B*T*nkv*hd), randSlice(r, B*T*nh*hd)
		for _, window := range []int{0, 50} {
			run := func(shared bool) [][]float32 {
				flashShared = shared
				defer func() { flashShared = false }()
				d := New(2)
				d.flash = 1
				out, lse := make([]float32, len(q)), make([]float32, B*nh*T)
				dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
				d.AttentionBF16(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
				d.AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
				return [][]float32{out, lse, dq, dk, dv}
			}
			want, got := run(true), run(false)
			for i, name := range []string{"out", "lse", "dq", "dk", "dv"} {
				for j := range want[i] {
					if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
						t.Errorf("hd%d q×%d window%d: %s[%d] = %g, the shared kernels give %g", hd, tc.qscale, window, name, j, got[i][j], want[i][j])
						break
					}
				}
			}
		}
	}
}

// BenchmarkAttentionBF16Paths compares the bf16 attention paths (the
// oneDNN blocked one, flash on AVX-512 BF16, flash on AMX) on the 125M
// bench model's heads at one long row (2048 tokens, and 8192 for the flash
// paths: the long-context step), forward and backward, reporting causal
// GFLOP/s (QKᵀ and PV: 2·nh·hd·T² forward, 2.5 times that back).
func BenchmarkAttentionBF16Paths(b *testing.B) {
	for _, T := range []int{2048, 8192} {
		const B = 1
		r := rand.New(rand.NewPCG(1, 1))
		q, k, v := randSlice(r, B*T*benchNH*benchHD), randSlice(r, B*T*benchKV*benchHD), randSlice(r, B*T*benchKV*benchHD)
		out, lse, ds := make([]float32, len(q)), make([]float32, B*benchNH*T), make([]int32, B*T)
		dout := randSlice(r, len(q))
		dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
		fwd := 2 * float64(B*benchNH*benchHD) * float64(T) * float64(T)
		for _, p := range []struct {
			name string
			isa  int
		}{{"onednn", 0}, {"avx512bf16", 1}, {"amx", 2}} {
			if flashISA < p.isa || (p.isa == 0 && T > 2048) {
				continue
			}
			d := New(0)
			d.flash = p.isa
			b.Run(fmt.Sprintf("T%d/%s/forward", T, p.name), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					d.AttentionBF16(out, lse, q, k, v, ds, B, T, benchNH, benchKV, benchHD, 0)
				}
				b.ReportMetric(fwd*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
			b.Run(fmt.Sprintf("T%d/%s/backward", T, p.name), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					d.AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v, ds, B, T, benchNH, benchKV, benchHD, 0)
				}
				b.ReportMetric(2.5*fwd*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkFlashAVX times the AVX-512 BF16 flash kernels against the ones
// they share with AMX (flashShared: the same bits, so the ratio is the
// speed-up alone), sub-benchmarks alternating, on one long row: the 125M
// bench model's heads (12 heads, 4 kv heads) and Llama-3.2-1B's GQA
// group of 4 (8 query heads over 2 kv heads, a quarter of its 32/8: the
// rate per head is the same, and 2 kv heads keep 2 threads busy in the
// backward), head size 64, at 8192 and 32768 tokens. GFLOP/s count the
// causal half, as BenchmarkAttentionBF16Paths.
// go test ./engine/cpu -run X -bench FlashAVX/T8192 -benchtime 1x -count 3
func BenchmarkFlashAVX(b *testing.B) {
	if flashISA < 1 {
		b.Skip("the CPU (or HONE_CPU_KERNELS) does not allow the avx512bf16 path")
	}
	for _, T := range []int{8192, 32768} {
		for _, sh := range []struct {
			name    string
			nh, nkv int
		}{{"125m", 12, 4}, {"1b", 8, 2}} {
			const B, hd = 1, 64
			r := rand.New(rand.NewPCG(1, 1))
			q, k, v := randSlice(r, B*T*sh.nh*hd), randSlice(r, B*T*sh.nkv*hd), randSlice(r, B*T*sh.nkv*hd)
			out, lse, ds := make([]float32, len(q)), make([]float32, B*sh.nh*T), make([]int32, B*T)
			dout := randSlice(r, len(q))
			dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
			fwd := 2 * float64(B*sh.nh*hd) * float64(T) * float64(T)
			d := New(0)
			d.flash = 1
			ready := false // out and lse hold a forward's (the backward reads them)
			for _, pass := range []string{"forward", "backward"} {
				for _, shared := range []bool{true, false} {
					kern := "avx"
					if shared {
						kern = "shared"
					}
					b.Run(fmt.Sprintf("T%d/%s/%s/%s", T, sh.name, pass, kern), func(b *testing.B) {
						flashShared = shared
						defer func() { flashShared = false }()
						flops := fwd
						if pass == "backward" && !ready {
							d.AttentionBF16(out, lse, q, k, v, ds, B, T, sh.nh, sh.nkv, hd, 0)
							b.ResetTimer()
						}
						ready = true
						for i := 0; i < b.N; i++ {
							if pass == "forward" {
								d.AttentionBF16(out, lse, q, k, v, ds, B, T, sh.nh, sh.nkv, hd, 0)
							} else {
								flops = 2.5 * fwd
								d.AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v, ds, B, T, sh.nh, sh.nkv, hd, 0)
							}
						}
						b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
					})
				}
			}
		}
	}
}
