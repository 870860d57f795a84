package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The fp32 flash attention (AVX-512F kernels and the Go path) against the
// oneDNN blocked fp32 attention, forward and backward. Both compute the
// same fp32 products and exponentials; what differs is the order of the
// sums (the flash forms accumulate over 64-key blocks with fused
// multiply-adds and rescale by e^(m_old − m_new) when a row's max grows;
// oneDNN sums in its own order) and, for the forward, the softmax sum taken
// block by block. Each output is a sum of at most T = 150 rounded terms
// (unit roundoff u = 2⁻²⁴ ≈ 6e-8); a reordering moves it by at most a
// few T·u of its terms' magnitudes, which is 1e-5 of the largest value.
// dQ and dK sum dS = P∘(dP − δ), which cancels (each row of dS sums to
// zero), so against their largest value the bound grows: 3e-5.
// With a window of 1 each query sees itself alone: dQ and dK are zero but
// for the rounding of dP − δ (δ = dO·O, dP = dO·V, O = V) times K or Q, so
// errors are taken against the larger of the largest value and the largest
// entry of the operand the gradient scales (K for dQ, Q for dK; 1 for the
// others).
// Packed documents (one starting inside a block, blocks wholly before a
// document), grouped heads, sliding windows, T not a multiple of the
// 64-query block, head sizes needing padding (24) and peaked rows
// (queries ×12: most probabilities underflow) are covered.
func TestFlash32MatchesBlocked(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	const B, T, nh, nkv = 2, 150, 4, 2
	docStart := make([]int32, B*T)
	for i := range docStart { // row 0: documents at 0, 37, 100; row 1: one
		if p := i % T; i < T && p >= 100 {
			docStart[i] = 100
		} else if i < T && p >= 37 {
			docStart[i] = 37
		}
	}
	paths := []struct {
		name string
		isa  int
	}{{"avx512", flash32AVX512}, {"go", flash32Go}}
	for _, tc := range []struct{ hd, qscale int }{{64, 1}, {24, 1}, {64, 12}} {
		hd := tc.hd
		q := randSlice(r, B*T*nh*hd)
		for i := range q {
			q[i] *= float32(tc.qscale)
		}
		k, v, dout := randSlice(r, B*T*nkv*hd), randSlice(r, B*T*nkv*hd), randSlice(r, B*T*nh*hd)
		for _, window := range []int{0, 1, 50} {
			ref := New(2)
			ref.flash32 = flash32Off
			out, lse := make([]float32, len(q)), make([]float32, B*nh*T)
			dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
			ref.Attention(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
			ref.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
			want := [][]float32{out, lse, dq, dk, dv}
			for _, p := range paths {
				t.Run(fmt.Sprintf("%s/hd%d/q×%d/window%d", p.name, hd, tc.qscale, window), func(t *testing.T) {
					if p.isa == flash32AVX512 && flash32ISA != flash32AVX512 {
						t.Skip("the CPU (or HONE_CPU_KERNELS) does not allow the AVX-512F path")
					}
					d := New(2)
					d.flash32 = p.isa
					out, lse := make([]float32, len(q)), make([]float32, B*nh*T)
					dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
					for i := range dk { // written, not added to
						dk[i], dv[i] = 7, 7
					}
					d.Attention(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
					d.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
					for i, c := range []struct {
						name  string
						got   []float32
						tol   float64
						floor float64
					}{{"out", out, 1e-5, 1}, {"lse", lse, 1e-5, 1}, {"dq", dq, 3e-5, maxAbs(k)}, {"dk", dk, 3e-5, maxAbs(q)}, {"dv", dv, 1e-5, 1}} {
						e := maxErrFloor(c.got, want[i], c.floor)
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

// maxErrFloor is the largest difference over the larger of want's
// largest magnitude and floor.
func maxErrFloor(got, want []float32, floor float64) float64 {
	d := 0.0
	for i := range got {
		d = max(d, math.Abs(float64(got[i]-want[i])))
	}
	return d / max(maxAbs(want), floor)
}

func maxAbs(x []float32) float64 {
	m := 0.0
	for _, v := range x {
		m = max(m, math.Abs(float64(v)))
	}
	return m
}

// BenchmarkAttentionFP32Paths compares the fp32 attention paths (the
// oneDNN blocked one and flash on AVX-512F) on the 125M bench model's
// heads, forward and backward, at a short row batch (the training bench's
// 4×256) and one long row, reporting causal GFLOP/s (QKᵀ and PV:
// 2·nh·hd·T² per row forward, 2.5 times that back).
func BenchmarkAttentionFP32Paths(b *testing.B) {
	for _, sz := range []struct{ B, T int }{{4, 256}, {1, 8192}} {
		B, T := sz.B, sz.T
		r := rand.New(rand.NewPCG(1, 1))
		q, k, v := randSlice(r, B*T*benchNH*benchHD), randSlice(r, B*T*benchKV*benchHD), randSlice(r, B*T*benchKV*benchHD)
		out, lse, ds := make([]float32, len(q)), make([]float32, B*benchNH*T), make([]int32, B*T)
		dout := randSlice(r, len(q))
		dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
		fwd := 2 * float64(B*benchNH*benchHD) * float64(T) * float64(T)
		for _, p := range []struct {
			name string
			isa  int
		}{{"onednn", flash32Off}, {"flash_avx512", flash32AVX512}} {
			if flash32ISA < p.isa {
				continue
			}
			d := New(0)
			d.flash32 = p.isa
			name := fmt.Sprintf("%s/B%d_T%d", p.name, B, T)
			b.Run(name+"/forward", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					d.Attention(out, lse, q, k, v, ds, B, T, benchNH, benchKV, benchHD, 0)
				}
				b.ReportMetric(fwd*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
			b.Run(name+"/backward", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					d.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, ds, B, T, benchNH, benchKV, benchHD, 0)
				}
				b.ReportMetric(2.5*fwd*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
