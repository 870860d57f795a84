package cpu

import (
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
