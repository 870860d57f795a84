package gguf

import (
	"math"
	"testing"
)

func testMatrix(t testing.TB, typ TensorType, rows, cols int) (*Matrix, []float32) {
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = float32(math.Sin(float64(i)*0.731)) * float32(1+i%5)
	}
	data := make([]byte, rows*typ.RowBytes(cols))
	Quantize(typ, data, w, cols)
	m, err := NewMatrix(typ, rows, cols, data)
	if err != nil {
		t.Fatal(err)
	}
	Dequantize(typ, w, data, cols) // the values MatVec multiplies
	return m, w
}

// MatVec with the fp32-activation kernels (AVX-512 where the CPU has it,
// and Go) equals a float64 product with the dequantized weights, for each
// row of x, set and accumulated. (The integer kernels: TestIntegerDots.)
func TestMatVec(t *testing.T) {
	for _, k := range []string{"avx512", "go"} {
		withKernels(t, k, func() { testMatVecFP32(t) })
	}
}

func testMatVecFP32(t *testing.T) {
	const rows, cols, n = 300, 512, 3
	x := make([]float32, n*cols)
	for i := range x {
		x[i] = float32(math.Cos(float64(i) * 0.37))
	}
	for _, typ := range []TensorType{Q8_0, Q4_K, Q6_K, Q5_0} {
		m, w := testMatrix(t, typ, rows, cols)
		y := make([]float32, n*rows)
		for i := range y {
			y[i] = 1
		}
		// The portable kernel agrees with whichever MatVec uses.
		yGo, yAny := make([]float32, rows), make([]float32, rows)
		m.dotRowsGo(yGo, x[:cols], 0, rows, false)
		m.MatVec(yAny, x[:cols], 1, false, 1)
		for o := range yGo {
			if d := math.Abs(float64(yGo[o] - yAny[o])); d > 1e-4*math.Abs(float64(yGo[o]))+1e-4 {
				t.Fatalf("%v: row %d: Go kernel %g, %s kernel %g", typ, o, yGo[o], DotKernels(), yAny[o])
			}
		}
		for _, acc := range []bool{false, true} {
			m.MatVec(y, x, n, acc, 4)
			for r := 0; r < n; r++ {
				for o := 0; o < rows; o++ {
					var want, mag float64
					for k := 0; k < cols; k++ {
						p := float64(w[o*cols+k]) * float64(x[r*cols+k])
						want += p
						mag += math.Abs(p)
					}
					if acc {
						want += want0(w, x, o, r, cols)
					}
					if got := float64(y[r*rows+o]); math.Abs(got-want) > 1e-5*mag+1e-6 {
						t.Fatalf("%v (%s) acc=%v: y[%d][%d] = %g, want %g", typ, DotKernels(), acc, r, o, got, want)
					}
				}
			}
		}
	}
}

// want0 is the product the first (non-accumulating) pass left in y.
func want0(w, x []float32, o, r, cols int) float64 {
	var s float64
	for k := 0; k < cols; k++ {
		s += float64(w[o*cols+k]) * float64(x[r*cols+k])
	}
	return s
}

func benchMatVec(b *testing.B, typ TensorType) {
	const rows, cols = 2048, 768
	m, _ := testMatrix(b, typ, rows, cols)
	x := make([]float32, cols)
	y := make([]float32, rows)
	b.SetBytes(int64(len(m.Data)))
	for b.Loop() {
		m.MatVec(y, x, 1, false, 1)
	}
}

func BenchmarkMatVecQ8_0(b *testing.B) { benchMatVec(b, Q8_0) }
func BenchmarkMatVecQ4_K(b *testing.B) { benchMatVec(b, Q4_K) }
