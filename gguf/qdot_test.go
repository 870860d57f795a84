package gguf

import (
	"math"
	"testing"
)

// testActs is n activation rows of cols elements, of varied magnitude,
// with row 1's first 256 elements zero (a block quantized to d = 0).
func testActs(n, cols int) []float32 {
	x := make([]float32, n*cols)
	for i := range x {
		x[i] = float32(math.Cos(float64(i)*0.37)) * float32(1+(i/97)%7)
		if i/cols == 1 && i%cols < 256 {
			x[i] = 0
		}
	}
	return x
}

// withKernels runs f with MatVec's kernels set to name, or skips where the
// CPU lacks them.
func withKernels(t *testing.T, name string, f func()) {
	prev, ok := SetDotKernels(name)
	defer SetDotKernels(prev)
	if !ok {
		t.Logf("%s: not in this build or on this CPU; skipped", name)
		return
	}
	f()
}

// The activation quantizers: each value within half a step of x, the
// block's largest magnitude at ±127, the 16-sums the sums of the values;
// the C quantizers give the Go ones' bits.
func TestQuantizeActivations(t *testing.T) {
	const n, cols = 3, 768
	x := testActs(n, cols)
	x[5] = -40 // the largest magnitude of block 0, negative: d < 0
	qs, d, bs := make([]int8, n*cols), make([]float32, n*cols/QK), make([]int16, n*cols/16)
	quantizeQ8K(qs, d, bs, x)
	for b := range d {
		var amax, mx float64
		for j := range QK {
			if v := float64(x[b*QK+j]); math.Abs(v) > amax {
				amax, mx = math.Abs(v), v
			}
		}
		if d[b]*float32(mx) > 0 {
			t.Fatalf("Q8_K block %d: d %g has the sign of its largest value %g: that value must map to -127", b, d[b], mx)
		}
		top := 0
		for j := range QK {
			i := b*QK + j
			if e := math.Abs(float64(qs[i])*float64(d[b]) - float64(x[i])); e > 0.5*math.Abs(float64(d[b]))*(1+1e-5) {
				t.Fatalf("Q8_K block %d elem %d: %d·%g is %g from %g", b, j, qs[i], d[b], e, x[i])
			}
			if qs[i] == 127 || qs[i] == -127 {
				top++
			}
		}
		if amax != 0 && (top == 0 || math.Abs(math.Abs(float64(d[b]))*127-amax) > 1e-5*amax) {
			t.Fatalf("Q8_K block %d: d %g, max |x| %g", b, d[b], amax)
		}
		for g := range 16 {
			var s int
			for _, v := range qs[b*QK+16*g : b*QK+16*g+16] {
				s += int(v)
			}
			if int(bs[b*16+g]) != s {
				t.Fatalf("Q8_K block %d group %d: sum %d, want %d", b, g, bs[b*16+g], s)
			}
		}
	}
	if d[0] <= 0 || d[3] != 0 {
		t.Fatalf("Q8_K scales %v: want block 0's positive (its largest value is negative), block 3's zero", d)
	}
	q0, d0 := make([]int8, n*cols), make([]float32, n*cols/32)
	quantizeQ8_0(q0, d0, x)
	for i, v := range x {
		dd := float64(d0[i/32])
		// Half a step, plus up to 127 steps of d's fp16 rounding (2^-11).
		if e := math.Abs(float64(q0[i])*dd - float64(v)); e > (0.5+127.0/2048)*dd+1e-30 {
			t.Fatalf("Q8_0 elem %d: %d·%g is %g from %g", i, q0[i], dd, e, v)
		}
	}
	withKernels(t, "int8-avx512vnni", func() {
		qc, dc, bc := make([]int8, len(qs)), make([]float32, len(d)), make([]int16, len(bs))
		if !quantizeQ8KC(qc, dc, bc, x) {
			t.Fatal("C Q8_K quantizer did not run")
		}
		for i := range qs {
			if qc[i] != qs[i] {
				t.Fatalf("C Q8_K elem %d: %d, Go %d", i, qc[i], qs[i])
			}
		}
		for i := range d {
			if dc[i] != d[i] {
				t.Fatalf("C Q8_K d[%d] %g, Go %g", i, dc[i], d[i])
			}
		}
		for i := range bs {
			if bc[i] != bs[i] {
				t.Fatalf("C Q8_K bsums[%d] %d, Go %d", i, bc[i], bs[i])
			}
		}
		qc0, dc0 := make([]int8, len(q0)), make([]float32, len(d0))
		quantizeQ8_0C(qc0, dc0, x)
		for i := range q0 {
			if qc0[i] != q0[i] || dc0[i/32] != d0[i/32] {
				t.Fatalf("C Q8_0 elem %d: %d·%g, Go %d·%g", i, qc0[i], dc0[i/32], q0[i], d0[i/32])
			}
		}
	})
}

// deqActs is activation row r as the kernels see it, q·d in float64.
func deqActs(t TensorType, a *q8Row, r, cols int) []float64 {
	out := make([]float64, cols)
	bs := QK
	if t == Q8_0 {
		bs = 32
	}
	for k := range out {
		i := r*cols + k
		out[k] = float64(a.qs[i]) * float64(a.d[i/bs])
	}
	return out
}

// The integer reference (intDotRowsGo) equals the float64 product of the
// dequantized weights and the dequantized 8-bit activations, and every
// SIMD kernel equals the reference up to fp32 rounding (the integer sums
// are exact in both; only the order in which the scaled block sums are
// added differs), set and accumulated, for 1 to 5 rows and any threads.
func TestIntegerDots(t *testing.T) {
	for _, tc := range []struct {
		typ        TensorType
		rows, cols int
	}{{Q8_0, 130, 800}, {Q8_0, 70, 512}, {Q4_K, 130, 768}, {Q5_K, 70, 512}, {Q6_K, 130, 768}} {
		m, w := testMatrix(t, tc.typ, tc.rows, tc.cols)
		for _, n := range []int{1, 2, 5, 17} {
			x := testActs(n, tc.cols)
			a := quantizeActs(tc.typ, x, n, tc.cols)
			ref := make([]float32, n*tc.rows)
			m.intDotRowsGo(ref, a, n, 0, tc.rows, false)
			mag := make([]float64, n*tc.rows)
			for r := range n {
				xr := deqActs(tc.typ, a, r, tc.cols)
				for o := range tc.rows {
					var want float64
					for k, v := range xr {
						want += float64(w[o*tc.cols+k]) * v
						mag[r*tc.rows+o] += math.Abs(float64(w[o*tc.cols+k]) * v)
					}
					if got := float64(ref[r*tc.rows+o]); math.Abs(got-want) > 1e-6*mag[r*tc.rows+o]+1e-30 {
						t.Fatalf("%v n=%d: reference y[%d][%d] = %.9g, float64 of the dequantized operands %.9g", tc.typ, n, r, o, got, want)
					}
				}
			}
			for _, kern := range []string{"int8-avx512vnni", "int8-avx2", "int8-go"} {
				withKernels(t, kern, func() {
					for _, acc := range []bool{false, true} {
						y := make([]float32, n*tc.rows)
						for i := range y {
							y[i] = 0.5
						}
						m.MatVec(y, x, n, acc, 1+n%3)
						for i := range y {
							want := float64(ref[i])
							if acc {
								want += 0.5
							}
							if math.Abs(float64(y[i])-want) > 1e-6*mag[i]+1e-6 {
								t.Fatalf("%v %s n=%d acc=%v: y[%d] = %.9g, reference %.9g", tc.typ, kern, n, acc, i, y[i], want)
							}
						}
					}
					// Several rows at once (weights unpacked once for all)
					// give each row's single-row bits.
					y := make([]float32, n*tc.rows)
					m.MatVec(y, x, n, false, 2)
					for r := range n {
						y1 := make([]float32, tc.rows)
						m.MatVec(y1, x[r*tc.cols:(r+1)*tc.cols], 1, false, 1)
						for o, v := range y1 {
							if y[r*tc.rows+o] != v {
								t.Fatalf("%v %s n=%d: row %d output %d is %.9g, alone %.9g", tc.typ, kern, n, r, o, y[r*tc.rows+o], v)
							}
						}
					}
				})
			}
			q8Pool.Put(a)
		}
	}
}

func benchKernels(b *testing.B, typ TensorType, kern string, n int) {
	prev, ok := SetDotKernels(kern)
	defer SetDotKernels(prev)
	if !ok {
		b.Skip(kern + ": not on this CPU")
	}
	const rows, cols = 2048, 768
	m, _ := testMatrix(b, typ, rows, cols)
	x := testActs(n, cols)
	y := make([]float32, n*rows)
	b.SetBytes(int64(len(m.Data)))
	for b.Loop() {
		m.MatVec(y, x, n, false, 1)
	}
}

func BenchmarkKernelsQ4_K(b *testing.B) {
	for _, k := range []string{"avx512", "int8-avx2", "int8-avx512vnni"} {
		for _, n := range []int{1, 4} {
			b.Run(k+"/n="+string(rune('0'+n)), func(b *testing.B) { benchKernels(b, Q4_K, k, n) })
		}
	}
}

func BenchmarkKernelsQ8_0(b *testing.B) {
	for _, k := range []string{"avx512", "int8-avx2", "int8-avx512vnni"} {
		b.Run(k, func(b *testing.B) { benchKernels(b, Q8_0, k, 1) })
	}
}

func BenchmarkKernelsQ6_K(b *testing.B) {
	for _, k := range []string{"avx512", "int8-avx2", "int8-avx512vnni"} {
		b.Run(k, func(b *testing.B) { benchKernels(b, Q6_K, k, 1) })
	}
}
