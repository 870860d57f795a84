package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Each op's backward against central finite differences of its forward,
// through the scalar L = Σ forward(x)·probe for a fixed random probe (so
// dL/dout = probe). The step is large enough for float32 forwards.
func fdCheck(t *testing.T, name string, loss func() float64, x, grad []float32) {
	t.Helper()
	const h = 1e-2
	for _, i := range []int{0, len(x) / 3, len(x) / 2, len(x) - 1} {
		old := x[i]
		x[i] = old + h
		up := loss()
		x[i] = old - h
		down := loss()
		x[i] = old
		fd := (up - down) / (2 * h)
		if g := float64(grad[i]); math.Abs(fd-g) > 1e-2*math.Abs(fd)+2e-3 {
			t.Errorf("%s: d/dx[%d] analytic %.6g, finite difference %.6g", name, i, g, fd)
		}
	}
}

func dot64(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

func TestRMSNormGradient(t *testing.T) {
	d, r := New(2), rand.New(rand.NewPCG(3, 4))
	const n, c = 5, 16
	x, w, probe := randSlice(r, n*c), randSlice(r, c), randSlice(r, n*c)
	out, rstd := make([]float32, n*c), make([]float32, n)
	loss := func() float64 { d.RMSNorm(out, nil, rstd, x, w, n, c, 1e-5); return dot64(out, probe) }
	loss()
	dx, dw := make([]float32, n*c), make([]float32, c)
	d.RMSNormBackward(dx, nil, dw, probe, x, w, rstd, n, c)
	fdCheck(t, "rmsnorm x", loss, x, dx)
	fdCheck(t, "rmsnorm w", loss, w, dw)
}

func TestSwiGLUGradient(t *testing.T) {
	d, r := New(2), rand.New(rand.NewPCG(3, 4))
	const n = 64
	g, u, probe := randSlice(r, n), randSlice(r, n), randSlice(r, n)
	h := make([]float32, n)
	loss := func() float64 { d.SwiGLU(h, nil, g, u, n); return dot64(h, probe) }
	dg, du := make([]float32, n), make([]float32, n)
	d.SwiGLUBackward(dg, du, nil, nil, probe, g, u, n)
	fdCheck(t, "swiglu gate", loss, g, dg)
	fdCheck(t, "swiglu up", loss, u, du)
}

func TestRoPEGradient(t *testing.T) {
	d, r := New(2), rand.New(rand.NewPCG(3, 4))
	const n, heads, hd = 3, 2, 8
	cos, sin := make([]float32, 8*hd/2), make([]float32, 8*hd/2)
	for p := 0; p < 8; p++ {
		for i := 0; i < hd/2; i++ {
			s, c := math.Sincos(float64(p) / math.Pow(100, float64(2*i)/hd))
			cos[p*hd/2+i], sin[p*hd/2+i] = float32(c), float32(s)
		}
	}
	pos := []int32{0, 3, 7}
	x, probe := randSlice(r, n*heads*hd), randSlice(r, n*heads*hd)
	y := make([]float32, len(x))
	loss := func() float64 { copy(y, x); d.RoPE(y, pos, cos, sin, n, heads, hd); return dot64(y, probe) }
	dx := append([]float32(nil), probe...)
	d.RoPEBackward(dx, pos, cos, sin, n, heads, hd)
	fdCheck(t, "rope", loss, x, dx)
}

func TestCrossEntropyGradient(t *testing.T) {
	d, r := New(2), rand.New(rand.NewPCG(3, 4))
	const n, v = 4, 50
	logits := randSlice(r, n*v)
	targets := []int32{3, -1, 49, 0}
	loss := func() float64 { l, _ := d.CrossEntropy(nil, nil, logits, targets, n, v, 0); return l }
	grad := make([]float32, n*v)
	d.CrossEntropy(grad, nil, logits, targets, n, v, 1)
	fdCheck(t, "cross-entropy", loss, logits, grad)
	// Reference loss for row 0 in float64.
	var mx, sum float64 = math.Inf(-1), 0
	for _, z := range logits[:v] {
		mx = math.Max(mx, float64(z))
	}
	for _, z := range logits[:v] {
		sum += math.Exp(float64(z) - mx)
	}
	want := mx + math.Log(sum) - float64(logits[3])
	got, _ := d.CrossEntropy(nil, nil, logits[:v], targets[:1], 1, v, 0)
	if math.Abs(got-want) > 1e-5*want {
		t.Errorf("cross-entropy row 0 = %v, want %v", got, want)
	}
}

func TestLayerNormGradient(t *testing.T) {
	d, r := New(2), rand.New(rand.NewPCG(3, 5))
	const n, c = 5, 16
	x, w, probe := randSlice(r, n*c), randSlice(r, c), randSlice(r, n*c)
	for i := range x {
		x[i] += 0.7 // a non-zero mean, which LayerNorm removes
	}
	out, rstd := make([]float32, n*c), make([]float32, n)
	loss := func() float64 { d.LayerNorm(out, nil, rstd, x, w, n, c, 1e-5); return dot64(out, probe) }
	loss()
	dx, dw := make([]float32, n*c), make([]float32, c)
	d.LayerNormBackward(dx, dw, probe, x, w, rstd, n, c)
	fdCheck(t, "layernorm x", loss, x, dx)
	fdCheck(t, "layernorm w", loss, w, dw)
}
