package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttentionPrefill holds the blocked prompt-chunk kernel to the float64
// reference and to the streaming kernel it replaces for chunks: GQA
// (group 1 to 10), sliding windows that start inside, at and before a key
// block, chunks and caches of ragged sizes (not multiples of the 64-key
// block or of the 16-column vectors), head sizes that are not multiples of
// 16, and chunks split over several tasks (one thread, several).
func TestAttentionPrefill(t *testing.T) {
	if !prefillSIMD {
		t.Skip("no AVX-512 on this CPU: chunks take the Go loop")
	}
	defer func(p bool) { prefillSIMD = p }(prefillSIMD)
	cases := []struct{ threads, start, nq, nh, nkv, hd, window int }{
		{0, 0, 8, 4, 4, 64, 0},
		{0, 0, 64, 12, 4, 64, 0},
		{0, 64, 64, 12, 4, 64, 0},
		{0, 2000, 64, 12, 4, 64, 0},
		{1, 2000, 64, 12, 4, 64, 0},
		{0, 4035, 61, 8, 2, 64, 300},
		{0, 1500, 17, 4, 1, 40, 129},
		{0, 130, 64, 2, 2, 160, 0},
		{0, 5, 33, 20, 2, 16, 7},
		{0, 700, 9, 10, 1, 48, 64},
		{3, 300, 100, 16, 8, 128, 1000},
		{0, 1000, 64, 32, 8, 64, 1},
		{0, 190, 70, 6, 3, 24, 200},
		{0, 3000, 64, 16, 2, 64, 0},
	}
	for _, c := range cases {
		name := fmt.Sprintf("threads%d_start%d_nq%d_nh%d_nkv%d_hd%d_w%d", c.threads, c.start, c.nq, c.nh, c.nkv, c.hd, c.window)
		t.Run(name, func(t *testing.T) {
			d := New(c.threads)
			rng := rand.New(rand.NewPCG(uint64(c.start+7), uint64(c.nq*c.hd+c.nh)))
			T := c.start + c.nq
			fill := func(n int, s float32) []float32 {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(rng.NormFloat64()) * s
				}
				return x
			}
			// Scaled up so the softmax is peaked and the running max moves.
			q := fill(c.nq*c.nh*c.hd, 2)
			kc, vc := fill(T*c.nkv*c.hd, 1), fill(T*c.nkv*c.hd, 1)
			want := attentionCached64(q, kc, vc, c.start, c.nq, c.nh, c.nkv, c.hd, c.window)
			blocked := make([]float32, len(want))
			streamed := make([]float32, len(want))
			for i := range blocked {
				blocked[i] = float32(math.NaN()) // every output must be written
			}
			prefillSIMD = true
			d.AttentionCached(blocked, q, kc, vc, c.start, c.nq, c.nh, c.nkv, c.hd, c.window)
			prefillSIMD = false
			d.AttentionCached(streamed, q, kc, vc, c.start, c.nq, c.nh, c.nkv, c.hd, c.window)
			// As TestAttentionCachedSIMD: fp32 products and exp32's 2 ulp.
			const tol = 1e-5
			var worst, worstPair float64
			for i, w := range want {
				e := math.Abs(float64(blocked[i])-w) / (1 + math.Abs(w))
				ep := math.Abs(float64(blocked[i])-float64(streamed[i])) / (1 + math.Abs(w))
				worst, worstPair = max(worst, e), max(worstPair, ep)
				if !(e <= tol) || !(ep <= tol) {
					t.Fatalf("out[%d]: float64 %g, blocked %g, streaming %g", i, w, blocked[i], streamed[i])
				}
			}
			t.Logf("worst scaled error: vs float64 %.2e, vs streaming kernel %.2e", worst, worstPair)
		})
	}
}

// BenchmarkAttentionPrefill compares the kernels on a prompt chunk (the
// fewest rows that take the blocked kernel, and 64) at the end of a long
// cache, the 125M shape's heads.
func BenchmarkAttentionPrefill(b *testing.B) {
	const nh, nkv, hd = 12, 4, 64
	for _, c := range []struct{ nq, T int }{{8, 8192}, {64, 8192}, {64, 32768}} {
		nq, T := c.nq, c.T
		for _, path := range []string{"streaming", "blocked"} {
			b.Run(fmt.Sprintf("nq%d_T%d/%s", nq, T, path), func(b *testing.B) {
				if !prefillSIMD {
					b.Skip("no AVX-512")
				}
				defer func(p bool) { prefillSIMD = p }(prefillSIMD)
				prefillSIMD = path == "blocked"
				d := New(0)
				rng := rand.New(rand.NewPCG(1, 2))
				fill := func(n int) []float32 {
					x := make([]float32, n)
					for i := range x {
						x[i] = float32(rng.NormFloat64())
					}
					return x
				}
				q, kc, vc := fill(nq*nh*hd), fill(T*nkv*hd), fill(T*nkv*hd)
				out := make([]float32, nq*nh*hd)
				b.ResetTimer()
				for range b.N {
					d.AttentionCached(out, q, kc, vc, T-nq, nq, nh, nkv, hd, 0)
				}
				flops := 4 * float64(nq) * float64(T) * nh * hd
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
