package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"hone/quant/nf4"
)

// The C kernel (AVX-512 where the CPU has it, and the plain C form) gives
// bit for bit what quant/nf4's Go dequantizer gives, for double-quantized
// and fp32 scales.
func TestDequantizeNF4BF16MatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	src := make([]float32, 64*300)
	for i := range src {
		src[i] = float32(r.NormFloat64()) * float32(1+i%1000) * 1e-3
	}
	for _, double := range []bool{false, true} {
		q := nf4.Quantize(src, double)
		want := make([]uint16, len(src))
		q.DequantizeBF16(want, 0)
		scales := make([]float32, nf4.Blocks(len(src)))
		q.Scales(scales, 0)
		for _, scalar := range []bool{false, true} {
			got := make([]uint16, len(src))
			nf4BF16(got, q.Packed, scales, &nf4.Code, scalar)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("double=%v scalar=%v: value %d = %#04x, Go gives %#04x", double, scalar, i, got[i], want[i])
				}
			}
		}
	}
}

// The NF4 matrix-vector kernel (AVX-512 where the CPU has it, and the
// plain C form) agrees with quant/nf4's Go reference (Tensor.Dot) for
// every row of W and of x, with and without accumulating, for both kinds
// of scales: |C − Go| ≤ 2·(cols+4)·2⁻²⁴·Σ|w·x|, the two sides' bounds of
// fp32 summation in different orders.
func TestMatVecNF4MatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const rows, cols, n = 37, 320, 6
	src := make([]float32, rows*cols)
	for i := range src {
		src[i] = float32(r.NormFloat64()) * float32(1+i%300) * 1e-3
	}
	x := make([]float32, n*cols)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	const ldy = rows + 3
	for _, double := range []bool{false, true} {
		q := nf4.Quantize(src, double)
		w := make([]float32, len(src))
		q.Dequantize(w, 0)
		scales := make([]float32, nf4.Blocks(len(src)))
		q.Scales(scales, 0)
		for _, scalar := range []bool{false, true} {
			for _, acc := range []bool{false, true} {
				y := make([]float32, n*ldy)
				for i := range y {
					y[i] = 1
				}
				nf4MatVec(y, ldy, x, n, cols, q.Packed, scales, &nf4.Code, acc, scalar)
				for i := 0; i < n; i++ {
					xi := x[i*cols : (i+1)*cols]
					for o := 0; o < rows; o++ {
						want := q.Dot(xi, o*cols)
						if acc {
							want++
						}
						var mag float64
						for k, v := range xi {
							mag += math.Abs(float64(w[o*cols+k] * v))
						}
						bound := 2*float64(cols+4)*0x1p-24*mag + 0x1p-24 // + the accumulated 1's rounding
						if got := y[i*ldy+o]; math.Abs(float64(got-want)) > bound {
							t.Fatalf("double=%v scalar=%v acc=%v: y[%d][%d] = %v, Go reference %v (bound %.3g)", double, scalar, acc, i, o, got, want, bound)
						}
					}
					if y[i*ldy+rows] != 1 {
						t.Fatalf("row %d: the kernel wrote past its %d outputs", i, rows)
					}
				}
			}
		}
	}
}
