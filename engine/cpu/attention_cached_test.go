package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// attentionCached64 is attention over the cache in float64, written
// independently of both kernels: causal, sliding window, GQA.
func attentionCached64(q, kc, vc []float32, start, nq, nh, nkv, hd, window int) []float64 {
	out := make([]float64, nq*nh*hd)
	group := nh / nkv
	for i := range nq {
		t := start + i
		j0 := 0
		if window > 0 {
			j0 = max(0, t-window+1)
		}
		for h := range nh {
			kh := h / group
			s := make([]float64, t+1)
			mx := math.Inf(-1)
			for j := j0; j <= t; j++ {
				var d float64
				for e := range hd {
					d += float64(q[(i*nh+h)*hd+e]) * float64(kc[(j*nkv+kh)*hd+e])
				}
				s[j] = d / math.Sqrt(float64(hd))
				mx = max(mx, s[j])
			}
			var sum float64
			for j := j0; j <= t; j++ {
				s[j] = math.Exp(s[j] - mx)
				sum += s[j]
			}
			for j := j0; j <= t; j++ {
				for e := range hd {
					out[(i*nh+h)*hd+e] += s[j] / sum * float64(vc[(j*nkv+kh)*hd+e])
				}
			}
		}
	}
	return out
}

// TestAttentionCachedSIMD holds the AVX-512 kernel and the Go loop to the
// float64 reference, and to each other, across decode (nq=1) and prefill
// chunk shapes, GQA, windows and a cache that already holds keys.
func TestAttentionCachedSIMD(t *testing.T) {
	if !cachedSIMD {
		t.Skip("no AVX-512 on this CPU: the Go loop is the only path")
	}
	defer func(p bool) { cachedSIMD, prefillSIMD = cachedSIMDDefault, p }(prefillSIMD)
	prefillSIMD = false // the streaming kernel, chunks included (TestAttentionPrefill has the blocked one)
	d := New(0)
	cases := []struct{ start, nq, nh, nkv, hd, window int }{
		{0, 1, 4, 4, 64, 0},
		{0, 64, 8, 2, 64, 0},
		{700, 1, 8, 2, 64, 0},
		{2000, 64, 8, 2, 64, 0},
		{2000, 64, 8, 2, 64, 300},
		{1500, 17, 4, 1, 40, 129},
		{3000, 1, 12, 3, 128, 1000},
		{130, 64, 2, 2, 160, 0},
		{5, 33, 20, 2, 16, 7},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("start%d_nq%d_nh%d_nkv%d_hd%d_w%d", c.start, c.nq, c.nh, c.nkv, c.hd, c.window), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(c.start), uint64(c.nq*c.hd)))
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
			fast := make([]float32, len(want))
			slow := make([]float32, len(want))
			for i := range fast {
				fast[i] = float32(math.NaN()) // every output must be written
			}
			cachedSIMD = true
			d.AttentionCached(fast, q, kc, vc, c.start, c.nq, c.nh, c.nkv, c.hd, c.window)
			cachedSIMD = false
			d.AttentionCached(slow, q, kc, vc, c.start, c.nq, c.nh, c.nkv, c.hd, c.window)
			// Outputs are averages of unit-scale values; 1e-5 absolute plus
			// 1e-5 relative covers float32 dot products and exp32's 2 ulp.
			const tol = 1e-5
			var worstF, worstS float64
			for i, w := range want {
				ef := math.Abs(float64(fast[i])-w) / (1 + math.Abs(w))
				es := math.Abs(float64(slow[i])-w) / (1 + math.Abs(w))
				worstF, worstS = max(worstF, ef), max(worstS, es)
				if !(ef <= tol) || !(es <= tol) {
					t.Fatalf("out[%d]: float64 %g, simd %g, go %g", i, w, fast[i], slow[i])
				}
			}
			t.Logf("worst scaled error: simd %.2e, go %.2e", worstF, worstS)
		})
	}
}

func BenchmarkAttentionCached(b *testing.B) {
	const nh, nkv, hd, T = 12, 12, 64, 8192
	for _, nq := range []int{1, 64} {
		for _, path := range []string{"go", "simd"} {
			b.Run(fmt.Sprintf("nq%d_T%d/%s", nq, T, path), func(b *testing.B) {
				if path == "simd" && !cachedSIMD {
					b.Skip("no AVX-512")
				}
				defer func() { cachedSIMD = cachedSIMDDefault }()
				cachedSIMD = path == "simd"
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
			})
		}
	}
}
