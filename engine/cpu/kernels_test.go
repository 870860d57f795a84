package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"hone/engine"
)

func randSlice(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func maxRel(a, b []float32) float64 {
	var d, s float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
		s = math.Max(s, math.Abs(float64(b[i])))
	}
	if s == 0 { // an all-zero reference (a window of 1 has zero dq, dk): absolute error
		return d
	}
	return d / s
}

// The blocked, matmul-based attention must equal the naive reference for any
// block size, with grouped heads, packed documents and sliding windows
// (shorter than a document, longer than one, and none).
func TestAttentionMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const B, T, nh, nkv, hd = 2, 13, 4, 2, 8
	// Row 0: three documents; row 1: one.
	docStart := make([]int32, B*T)
	for i := 0; i < T; i++ {
		switch {
		case i < 5:
			docStart[i] = 0
		case i < 9:
			docStart[i] = 5
		default:
			docStart[i] = 9
		}
	}
	q, k, v := randSlice(r, B*T*nh*hd), randSlice(r, B*T*nkv*hd), randSlice(r, B*T*nkv*hd)
	dout := randSlice(r, B*T*nh*hd)
	for _, window := range []int{0, 1, 3, 6, 20} {
		ref := New(2)
		outR, lseR := make([]float32, len(q)), make([]float32, B*nh*T)
		ref.attentionNaive(outR, lseR, q, k, v, docStart, B, T, nh, nkv, hd, window)
		dqR, dkR, dvR := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
		ref.attentionBackwardNaive(dqR, dkR, dvR, dout, outR, lseR, q, k, v, docStart, B, T, nh, nkv, hd, window)
		for _, block := range []int{0, 1, 4, 5, 13} {
			checkBlocked(t, fmt.Sprintf("window%d/block%d", window, block), block, window, q, k, v, dout, docStart,
				[][]float32{outR, lseR, dqR, dkR, dvR})
		}
	}
}

// checkBlocked runs the blocked kernels with one block size and window and
// compares out, lse, dq, dk, dv with the naive results want.
func checkBlocked(t *testing.T, name string, block, window int, q, k, v, dout []float32, docStart []int32, want [][]float32) {
	const B, T, nh, nkv, hd = 2, 13, 4, 2, 8
	outR, lseR, dqR, dkR, dvR := want[0], want[1], want[2], want[3], want[4]
	t.Run(name, func(t *testing.T) {
		d := New(2)
		d.attnBlock, d.flash32 = block, flash32Off // the blocked form (TestFlash32MatchesBlocked checks flash against it)
		out, lse := make([]float32, len(q)), make([]float32, B*nh*T)
		d.Attention(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
		dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
		d.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
		for _, c := range []struct {
			name      string
			got, want []float32
		}{{"out", out, outR}, {"lse", lse, lseR}, {"dq", dq, dqR}, {"dk", dk, dkR}, {"dv", dv, dvR}} {
			if e := maxRel(c.got, c.want); e > 2e-6 {
				t.Errorf("%s: blocked vs naive relative error %.3g", c.name, e)
			}
		}
	})
}

func TestExp32(t *testing.T) {
	for x := float32(-87); x < 88; x += 0.0137 {
		got, want := float64(exp32(x)), math.Exp(float64(x))
		if math.Abs(got-want) > 3e-7*want {
			t.Fatalf("exp32(%v) = %v, want %v", x, got, want)
		}
	}
	if exp32(-100) != 0 || !math.IsInf(float64(exp32(100)), 1) {
		t.Fatal("exp32 out-of-range handling")
	}
}

// Devices share the process's oneDNN engine: creating a second one must not
// invalidate the first one's cached primitives (training and serving live
// in one process).
func TestDevicesCoexist(t *testing.T) {
	a := New(1)
	x, c := []float32{1, 2, 3, 4}, make([]float32, 4)
	a.MatMul(c, x, x, 2, 2, 2, engine.MatMulFlags{})
	b := New(1)
	b.MatMul(c, x, x, 2, 2, 2, engine.MatMulFlags{TransB: true})
	a.MatMul(c, x, x, 2, 2, 2, engine.MatMulFlags{})
	if c[0] != 7 || c[3] != 22 {
		t.Fatalf("matmul after a second device = %v, want [7 10 15 22]", c)
	}
}

// The fused bf16 outputs are exactly the rounding of the fp32 outputs.
func TestFusedCasts(t *testing.T) {
	d, r := New(2), rand.New(rand.NewPCG(5, 6))
	const n, c = 7, 24
	x, w := randSlice(r, n*c), randSlice(r, c)
	out, out16, rstd := make([]float32, n*c), make([]uint16, n*c), make([]float32, n)
	d.RMSNorm(out, out16, rstd, x, w, n, c, 1e-5)
	g, u := randSlice(r, n*c), randSlice(r, n*c)
	h, h16 := make([]float32, n*c), make([]uint16, n*c)
	d.SwiGLU(h, h16, g, u, n*c)
	for i := range out {
		if out16[i] != toBF16(out[i]) || h16[i] != toBF16(h[i]) {
			t.Fatalf("element %d: fused bf16 %#x %#x, want %#x %#x", i, out16[i], h16[i], toBF16(out[i]), toBF16(h[i]))
		}
	}
}
