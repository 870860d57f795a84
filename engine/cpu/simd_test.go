package cpu

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"hone/engine"
)

// The AVX-512 kernels (simd.go) against the portable Go kernels they
// replace. Elementwise kernels do the same float32 operations in the same
// order, so they must match bit for bit; reductions whose summation order
// changes are held to the bounds stated per test.

// both runs f with the C kernels and then with the Go kernels.
func both(t *testing.T, f func(vec bool)) {
	t.Helper()
	if !simd {
		t.Skip("no AVX-512 on this CPU: the portable kernels are the only path")
	}
	defer func() { simd = true }()
	f(true)
	simd = false
	f(false)
}

// ulps is how many float32 values lie between a and b (0 when equal).
func ulps(a, b float32) int64 {
	key := func(x float32) int64 {
		u := int64(math.Float32bits(x))
		if u&(1<<31) != 0 {
			return -(u &^ (1 << 31))
		}
		return u
	}
	d := key(a) - key(b)
	if d < 0 {
		d = -d
	}
	return d
}

func maxUlps(a, b []float32) int64 {
	var m int64
	for i := range a {
		m = max(m, ulps(a[i], b[i]))
	}
	return m
}

// sameBits requires equal bits, except that a NaN matches any NaN: which
// operand's payload an instruction propagates is not part of the contract.
func sameBits(t *testing.T, what string, a, b []float32) {
	t.Helper()
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) {
			t.Fatalf("%s[%d]: AVX-512 %v (%#x), Go %v (%#x)", what, i, a[i], math.Float32bits(a[i]), b[i], math.Float32bits(b[i]))
		}
	}
}

// sameBF16 is sameBits for bf16 values: equal, or NaN in both (the
// payload of a NaN an operation makes is the hardware's choice).
func sameBF16(t *testing.T, what string, a, b []uint16) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d values, want %d", what, len(a), len(b))
	}
	nan := func(u uint16) bool { return u&0x7fff > 0x7f80 }
	for i := range a {
		if a[i] != b[i] && !(nan(a[i]) && nan(b[i])) {
			t.Fatalf("%s[%d]: AVX-512 %#x, Go %#x", what, i, a[i], b[i])
		}
	}
}

// specials are values where rounding and exponent tricks go wrong first.
var specials = []float32{0, float32(math.Copysign(0, -1)), 1, -1, float32(math.Inf(1)), float32(math.Inf(-1)),
	float32(math.NaN()), math.Float32frombits(0x7f800001), math.Float32frombits(0xffc12345),
	math.Float32frombits(1), math.Float32frombits(0x807fffff), math.Float32frombits(0x3f808000), math.Float32frombits(0x3f818000),
	math.Float32frombits(0x7f7fffff), math.Float32frombits(0x7f7f8000), 1e-40, -3e-39, 88.7, 88.8, -87.3, -87.4, 100, -100}

func TestSIMDToBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	src := append(slices.Clone(specials), randSlice(r, 1000)...)
	for i := range 500 { // random bit patterns: every exponent, ties included
		src = append(src, math.Float32frombits(r.Uint32()&^uint32(i&1)<<15))
	}
	var got [2][]uint16
	both(t, func(vec bool) {
		d := New(2)
		dst := make([]uint16, len(src))
		d.ToBF16(dst, src)
		got[b2i(vec)] = dst
	})
	for i := range src {
		if got[0][i] != got[1][i] {
			t.Fatalf("ToBF16(%#x): AVX-512 %#x, Go %#x", math.Float32bits(src[i]), got[1][i], got[0][i])
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// AdamW and its fused bf16 copy: bit for bit, over several steps, with and
// without clipping's gradient scale and weight decay.
func TestSIMDAdamW(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	const n = blocks*2 + 37 // several threads' ranges and a vector tail
	p0, g := randSlice(r, n), randSlice(r, n)
	copy(g, specials[:12]) // zeros, infinities, denormals in the gradient
	type state struct {
		p, m, v []float32
		p16     []uint16
	}
	var got [2]state
	both(t, func(vec bool) {
		d := New(2)
		s := state{slices.Clone(p0), make([]float32, n), make([]float32, n), make([]uint16, n)}
		for step := 1; step <= 3; step++ {
			d.AdamW(s.p, g, s.m, s.v, s.p16, engine.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8,
				WeightDecay: 0.1 * float32(step-1), Step: step, GradScale: []float32{0, 0.37, 1}[step-1]})
		}
		d.AdamW(s.p[:100], g[:100], s.m[:100], s.v[:100], nil, engine.AdamWStep{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-6, Step: 4})
		got[b2i(vec)] = s
	})
	sameBits(t, "p", got[1].p, got[0].p)
	sameBits(t, "m", got[1].m, got[0].m)
	sameBits(t, "v", got[1].v, got[0].v)
	if !slices.Equal(got[1].p16, got[0].p16) {
		t.Fatal("AdamW's bf16 copy differs")
	}
}

// LionW and its fused bf16 copy: bit for bit, over several steps with
// decay and clipping's gradient scale, on specials in g, m and p, on pairs
// of signed zeros, and on lanes where β1·m + (1−β1)·g is exactly 0 (sign 0,
// no step) though neither term is.
func TestSIMDLionW(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	const n = blocks*2 + 37 // several threads' ranges and a vector tail
	steps := []engine.LionWStep{
		{LR: 1e-3, Beta1: 0.9, Beta2: 0.99, Decay: 1 - 1e-3, GradScale: 0.37},
		{LR: 1e-3, Beta1: 0.9, Beta2: 0.99, Decay: 1},
		{LR: 3e-4, Beta1: 0.95, Beta2: 0.98, Decay: 0.99, GradScale: 1.7},
	}
	p0, g, m0 := randSlice(r, n), randSlice(r, n), randSlice(r, n)
	k := copy(g, specials)
	k += copy(m0[k:], specials)
	k += copy(p0[k:], specials)
	negZero := float32(math.Copysign(0, -1))
	for _, z := range [][2]float32{{0, 0}, {0, negZero}, {negZero, 0}, {negZero, negZero}, {1e-40, -1e-40}} {
		m0[k], g[k] = z[0], z[1]
		k++
	}
	// Lanes that cancel at step 1: for each m, a g within 8 ulps of
	// −β1·m/((1−β1)·GradScale) whose term is exactly −β1·m.
	s0 := steps[0]
	c := func(m, g float32) float32 {
		return float32(s0.Beta1*m) + float32((1-s0.Beta1)*float32(g*s0.GradScale))
	}
	zeros := 0
	for i := k; i < k+500; i++ {
		g0 := -s0.Beta1 * m0[i] / ((1 - s0.Beta1) * s0.GradScale)
		for d := int32(-8); d <= 8; d++ {
			if x := math.Float32frombits(uint32(int32(math.Float32bits(g0)) + d)); c(m0[i], x) == 0 {
				g[i] = x
				zeros++
				break
			}
		}
	}
	if zeros < 100 {
		t.Fatalf("only %d of 500 lanes cancel exactly: the test no longer covers sign(0)", zeros)
	}
	type state struct {
		p, m []float32
		p16  []uint16
	}
	var got [2]state
	both(t, func(vec bool) {
		d := New(2)
		s := state{slices.Clone(p0), slices.Clone(m0), make([]uint16, n)}
		for _, st := range steps {
			d.LionW(s.p, g, s.m, s.p16, st)
		}
		d.LionW(s.p[:100], g[:100], s.m[:100], nil, steps[0]) // no bf16 copy, a tail of 4
		got[b2i(vec)] = s
	})
	sameBits(t, "p", got[1].p, got[0].p)
	sameBits(t, "m", got[1].m, got[0].m)
	sameBF16(t, "p16", got[1].p16, got[0].p16)
}

func TestSIMDSwiGLU(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	const n = swigluBlock*3 + 5
	gate, up, dh := randSlice(r, n), randSlice(r, n), randSlice(r, n)
	for i := range gate[:2000] { // the exponential's clamps and large arguments
		gate[i] *= 40
	}
	copy(gate[2000:], specials)
	var got [2][][]float32
	var got16 [2][][]uint16
	both(t, func(vec bool) {
		d := New(2)
		h, h16, dg, du := make([]float32, n), make([]uint16, n), make([]float32, n), make([]float32, n)
		d.SwiGLU(h, h16, gate, up, n)
		// The backward with its bf16 casts fused: the fp32 outputs are
		// those of the unfused kernel, the casts those ToBF16 makes of them.
		dg16, du16 := make([]uint16, n), make([]uint16, n)
		d.SwiGLUBackward(dg, du, dg16, du16, dh, gate, up, n)
		dg0, du0, want16 := make([]float32, n), make([]float32, n), make([]uint16, n)
		d.SwiGLUBackward(dg0, du0, nil, nil, dh, gate, up, n)
		sameBits(t, "dgate beside its cast", dg, dg0)
		sameBits(t, "dup beside its cast", du, du0)
		for _, c := range [][2]any{{dg16, dg0}, {du16, du0}} {
			d.ToBF16(want16, c[1].([]float32))
			if !slices.Equal(c[0].([]uint16), want16) {
				t.Fatalf("vec=%v: SwiGLUBackward's fused bf16 output differs from ToBF16 of its fp32 output", vec)
			}
		}
		got[b2i(vec)], got16[b2i(vec)] = [][]float32{h, dg, du}, [][]uint16{h16, dg16, du16}
	})
	for i, name := range []string{"h", "dgate", "dup"} {
		sameBits(t, name, got[1][i], got[0][i])
		sameBF16(t, name+"'s bf16 copy", got16[1][i], got16[0][i])
	}
}

func TestSIMDRoPE(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	const n, heads, hd, maxPos = 7, 3, 40, 16 // half = 20: one full vector and a tail
	x0 := randSlice(r, n*heads*hd)
	cos, sin := randSlice(r, maxPos*hd/2), randSlice(r, maxPos*hd/2)
	pos := []int32{0, 3, 15, 2, 2, 9, 1}
	var got [2][]float32
	both(t, func(vec bool) {
		d := New(2)
		x := slices.Clone(x0)
		d.RoPE(x, pos, cos, sin, n, heads, hd)
		y := slices.Clone(x)
		d.RoPEBackward(y, pos, cos, sin, n, heads, hd)
		got[b2i(vec)] = append(x, y...)
	})
	sameBits(t, "rope", got[1], got[0])
}

// Sums of squares accumulate in float64 either way; only the order of the
// additions differs, so the two agree to a few float64 roundings per block
// (relative 1e-12 is far above that and far below float32's 6e-8).
func TestSIMDSumSquares(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	x := randSlice(r, blocks*5+3)
	var got [2]float64
	both(t, func(vec bool) { got[b2i(vec)] = New(2).SumSquares(x) })
	if rel := math.Abs(got[1]-got[0]) / got[0]; rel > 1e-12 {
		t.Fatalf("SumSquares: AVX-512 %v, Go %v (relative %g)", got[1], got[0], rel)
	}
}

// RMSNorm's Σx² (float64, reordered) can move rstd by one float32 ulp, so
// outputs agree within 2 ulp (one from rstd, one from the product); the
// backward's Σ dy·w·x likewise moves its coefficient by an ulp, bounded
// here relative to the row's largest term; dw sums rows in the same order
// from the same rstd, so it is bit for bit.
func TestSIMDRMSNorm(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	for _, dim := range []int{768, 77} {
		const n = 9
		x, w, dout := randSlice(r, n*dim), randSlice(r, dim), randSlice(r, n*dim)
		dx0, dw0 := randSlice(r, n*dim), randSlice(r, dim)
		var got [2][][]float32
		var got16 [2][]uint16
		both(t, func(vec bool) {
			d := New(2)
			out, out16, rstd := make([]float32, n*dim), make([]uint16, n*dim), make([]float32, n)
			d.RMSNorm(out, out16, rstd, x, w, n, dim, 1e-5)
			dx, dw := slices.Clone(dx0), slices.Clone(dw0)
			ref := make([]float32, n) // the same rstd into both backwards
			for i := range ref {
				ref[i] = 0.5 + float32(i)/8
			}
			dx16 := make([]uint16, n*dim)
			d.RMSNormBackward(dx, dx16, dw, dout, x, w, ref, n, dim)
			// The fused cast is ToBF16 of the dx written beside it, and
			// that dx is the unfused kernel's.
			dxu, dwu, want16 := slices.Clone(dx0), slices.Clone(dw0), make([]uint16, n*dim)
			d.RMSNormBackward(dxu, nil, dwu, dout, x, w, ref, n, dim)
			sameBits(t, "dx beside its cast", dx, dxu)
			d.ToBF16(want16, dx)
			if !slices.Equal(dx16, want16) {
				t.Fatalf("dim %d (vectorised %v): RMSNormBackward's bf16 dx differs from ToBF16 of its dx", dim, vec)
			}
			got[b2i(vec)], got16[b2i(vec)] = [][]float32{out, rstd, dx, dw}, out16
		})
		if u := maxUlps(got[1][1], got[0][1]); u > 1 {
			t.Fatalf("dim %d: rstd differs by %d ulp", dim, u)
		}
		if u := maxUlps(got[1][0], got[0][0]); u > 2 {
			t.Fatalf("dim %d: RMSNorm out differs by %d ulp", dim, u)
		}
		for i := range got16[0] { // bf16 of values within 2 ulp: equal or adjacent
			if d := int(got16[1][i]) - int(got16[0][i]); d < -1 || d > 1 {
				t.Fatalf("dim %d: bf16 out[%d] %#x vs %#x", dim, i, got16[1][i], got16[0][i])
			}
		}
		if e := maxRel(got[1][2], got[0][2]); e > 1e-6 {
			t.Fatalf("dim %d: dx relative error %g", dim, e)
		}
		sameBits(t, "dw", got[1][3], got[0][3])
	}
}

// CrossEntropy's exponentials are bit for bit; their sum is reordered
// within each 64-value float32 run, so the loss agrees to float32 rounding
// of the run sums (relative 1e-6 of the total) and the gradient, scaled by
// 1/sum, within 2 ulp. The arg-max must be identical.
func TestSIMDCrossEntropy(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	const n, vocab = 6, 1000 + 13
	logits := randSlice(r, n*vocab)
	for i := range logits {
		logits[i] *= 4
	}
	logits[2*vocab+500] = 30 // a clear winner
	logits[3*vocab+7], logits[3*vocab+900] = 25, 25
	targets := []int32{5, -1, 500, 900, 0, vocab - 1}
	type res struct {
		loss  float64
		hits  int
		dlog  []float32
		loss2 float64
	}
	var got [2]res
	both(t, func(vec bool) {
		d := New(2)
		dl := make([]float32, n*vocab)
		l, h := d.CrossEntropy(dl, nil, logits, targets, n, vocab, 0.25)
		l2, _ := d.CrossEntropy(nil, nil, logits, targets, n, vocab, 1)
		alias := slices.Clone(logits) // dlogits may alias logits
		if l3, _ := d.CrossEntropy(alias, nil, alias, targets, n, vocab, 0.25); l3 != l || !slices.Equal(alias, dl) {
			t.Fatalf("aliased CrossEntropy (vectorised %v): loss %v vs %v, or gradients differ", vec, l3, l)
		}
		// The gradient written in bf16 only is ToBF16 of the fp32 one, bit
		// for bit, unscored rows zero, with logits as scratch.
		want16 := make([]uint16, n*vocab)
		d.ToBF16(want16, dl)
		dl16 := make([]uint16, n*vocab)
		for i := range dl16 {
			dl16[i] = 0xffff // stale values an unscored row must clear
		}
		scratch := slices.Clone(logits)
		if l4, h4 := d.CrossEntropy(scratch, dl16, scratch, targets, n, vocab, 0.25); l4 != l || h4 != h {
			t.Fatalf("CrossEntropy with a bf16 gradient (vectorised %v): loss %v, hits %d; want %v, %d", vec, l4, h4, l, h)
		}
		if !slices.Equal(dl16, want16) {
			t.Fatalf("CrossEntropy's bf16 gradient (vectorised %v) differs from ToBF16 of its fp32 gradient", vec)
		}
		got[b2i(vec)] = res{l, h, dl, l2}
	})
	if got[1].hits != got[0].hits {
		t.Fatalf("arg-max hits: AVX-512 %d, Go %d", got[1].hits, got[0].hits)
	}
	for _, p := range [][2]float64{{got[1].loss, got[0].loss}, {got[1].loss2, got[0].loss2}} {
		if rel := math.Abs(p[0]-p[1]) / p[1]; rel > 1e-6 {
			t.Fatalf("loss: AVX-512 %v, Go %v", p[0], p[1])
		}
	}
	for i := range got[0].dlog {
		a, b := got[1].dlog[i], got[0].dlog[i]
		if ulps(a, b) > 2 && math.Abs(float64(a-b)) > 1e-7 { // the −scale at the target cancels
			t.Fatalf("dlogits[%d]: AVX-512 %v, Go %v", i, a, b)
		}
	}
}

// Attention with the vectorised softmax against the Go one: the row sums
// are reordered (float32), everything else is the same, so outputs agree
// to float32 rounding.
func TestSIMDAttention(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	const B, T, nh, nkv, hd = 2, 37, 4, 2, 16
	docStart := make([]int32, B*T)
	for i := range docStart {
		if i%T >= 20 {
			docStart[i] = 20
		}
	}
	q, k, v, dout := randSlice(r, B*T*nh*hd), randSlice(r, B*T*nkv*hd), randSlice(r, B*T*nkv*hd), randSlice(r, B*T*nh*hd)
	var got [2][][]float32
	both(t, func(vec bool) {
		d := New(2)
		out, lse := make([]float32, len(q)), make([]float32, B*nh*T)
		d.Attention(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, 9)
		dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
		d.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, 9)
		got[b2i(vec)] = [][]float32{out, lse, dq, dk, dv}
	})
	for i, name := range []string{"out", "lse", "dq", "dk", "dv"} {
		if e := maxRel(got[1][i], got[0][i]); e > 1e-5 {
			t.Fatalf("%s: relative difference %g", name, e)
		}
	}
}

// Bias, its gradient and the embedding gathers and scatters are sums in
// the same order: bit for bit.
func TestSIMDBiasEmbedding(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	const n, dim, vocab = 11, 45, 7
	y0, b0, dy := randSlice(r, n*dim), randSlice(r, dim), randSlice(r, n*dim)
	table, dt0 := randSlice(r, vocab*dim), randSlice(r, vocab*dim)
	t16 := make([]uint16, len(table))
	for i, v := range table {
		t16[i] = toBF16(v)
	}
	ids := []int32{3, 0, 6, 3, 3, 1, 2, 6, 0, 5, 4}
	var got [2][]float32
	both(t, func(vec bool) {
		d := New(2)
		y, db, dtable, emb := slices.Clone(y0), slices.Clone(b0), slices.Clone(dt0), make([]float32, n*dim)
		d.AddBias(y, b0, n, dim)
		d.BiasBackward(db, dy, n, dim)
		d.EmbeddingBF16(emb, ids, t16, n, dim)
		d.EmbeddingBackward(dtable, ids, dy, n, dim)
		got[b2i(vec)] = slices.Concat(y, db, emb, dtable)
	})
	sameBits(t, "bias/embedding", got[1], got[0])
}
