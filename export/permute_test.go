package export_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"hone/export"
)

// ropeHalf rotates x (one head) as HF Llama does: element i pairs with
// i+d/2. ropeInterleaved rotates as llama.cpp's llama architecture does:
// element 2i pairs with 2i+1. Both turn pair i by pos*freq[i].
func ropeHalf(x []float64, pos float64, freq []float64) []float64 {
	d, out := len(x), make([]float64, len(x))
	for i := 0; i < d/2; i++ {
		s, c := math.Sincos(pos * freq[i])
		out[i] = x[i]*c - x[i+d/2]*s
		out[i+d/2] = x[i+d/2]*c + x[i]*s
	}
	return out
}

func ropeInterleaved(x []float64, pos float64, freq []float64) []float64 {
	out := make([]float64, len(x))
	for i := 0; i < len(x)/2; i++ {
		s, c := math.Sincos(pos * freq[i])
		out[2*i] = x[2*i]*c - x[2*i+1]*s
		out[2*i+1] = x[2*i+1]*c + x[2*i]*s
	}
	return out
}

// The permuted projection under llama.cpp's rotary embedding gives the
// attention scores the original gives under HF's: for each head, the
// query and key after rotation have the same dot product.
func TestPermuteQKPreservesAttentionScores(t *testing.T) {
	const heads, hd, cols = 3, 8, 5
	r := rand.New(rand.NewPCG(1, 2))
	wq := make([]float32, heads*hd*cols)
	wk := make([]float32, heads*hd*cols)
	for i := range wq {
		wq[i], wk[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	x, y := make([]float32, cols), make([]float32, cols)
	for i := range x {
		x[i], y[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	freq := []float64{1, 0.3, 0.05, 0.001}
	pq, pk := export.PermuteQK(wq, heads, cols), export.PermuteQK(wk, heads, cols)
	for h := 0; h < heads; h++ {
		for _, pos := range [][2]float64{{0, 0}, {5, 2}, {17, 3}} {
			hf := dot(ropeHalf(proj(wq, h, hd, x), pos[0], freq), ropeHalf(proj(wk, h, hd, y), pos[1], freq))
			lc := dot(ropeInterleaved(proj(pq, h, hd, x), pos[0], freq), ropeInterleaved(proj(pk, h, hd, y), pos[1], freq))
			if math.Abs(hf-lc) > 1e-9*math.Max(1, math.Abs(hf)) {
				t.Errorf("head %d positions %v: score %g under llama.cpp's layout, %g under HF's", h, pos, lc, hf)
			}
		}
	}
}

// proj is head h of w·x.
func proj(w []float32, h, hd int, x []float32) []float64 {
	out := make([]float64, hd)
	for i := range out {
		row := w[(h*hd+i)*len(x):]
		for j, v := range x {
			out[i] += float64(row[j]) * float64(v)
		}
	}
	return out
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}
