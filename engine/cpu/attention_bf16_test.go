package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// bf16 attention against fp32 attention over the same bf16-rounded q, k, v
// and dO, so the difference is only what the bf16 form adds: rounding the
// probabilities P (forward, dV) and the score gradient dS (dQ, dK) to bf16,
// a relative 2⁻⁹ per element, and accumulation order. Over rows of ≤ 40
// keys that bounds the output and dV at 5e-3 of their largest value and
// dQ, dK at 1e-2 (dS's rows sum to about zero, so they lose a few bits to
// cancellation); measured here: 2e-3 and 3e-3. The log-sum-exp uses only
// exact bf16 products and fp32 sums: 1e-5. Grouped heads, packed documents, sliding windows
// and several query blocks are covered.
func TestAttentionBF16MatchesFP32OnRoundedInputs(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 10))
	const B, T, nh, nkv, hd = 2, 37, 4, 2, 16
	docStart := make([]int32, B*T)
	for i := range docStart {
		if i%T >= 20 {
			docStart[i] = 20
		}
	}
	round := func(x []float32) []float32 {
		for i, v := range x {
			x[i] = widenBF16(toBF16(v))
		}
		return x
	}
	q, k, v := round(randSlice(r, B*T*nh*hd)), round(randSlice(r, B*T*nkv*hd)), round(randSlice(r, B*T*nkv*hd))
	dout := round(randSlice(r, B*T*nh*hd))
	for _, window := range []int{0, 9} {
		for _, block := range []int{0, 8} {
			name := fmt.Sprintf("window%d/block%d", window, block)
			var got [2][][]float32
			for i, bf16 := range []bool{false, true} {
				d := New(2)
				d.attnBlock = block
				out, lse := make([]float32, len(q)), make([]float32, B*nh*T)
				dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
				if bf16 {
					d.AttentionBF16(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
					d.AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
				} else {
					d.Attention(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
					d.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
				}
				got[i] = [][]float32{out, lse, dq, dk, dv}
			}
			for i, c := range []struct {
				name string
				tol  float64
			}{{"out", 5e-3}, {"lse", 1e-5}, {"dq", 1e-2}, {"dk", 1e-2}, {"dv", 5e-3}} {
				e := maxRel(got[1][i], got[0][i])
				if e > c.tol {
					t.Errorf("%s: %s differs by %.3g of its largest value (bound %g)", name, c.name, e, c.tol)
				}
				if testing.Verbose() {
					t.Logf("%s: %s %.3g", name, c.name, e)
				}
			}
		}
	}
}

func widenBF16(h uint16) float32 {
	var out [1]float32
	New(1).EmbeddingBF16(out[:], []int32{0}, []uint16{h}, 1, 1)
	return out[0]
}
