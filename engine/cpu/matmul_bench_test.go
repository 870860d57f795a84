package cpu

import (
	"fmt"
	"testing"

	"hone/engine"
)

// BenchmarkMatMul covers the three operand layouts a linear layer uses:
// forward x·Wᵀ (tb), input gradient dy·W (none) and weight gradient dyᵀ·x (ta).
func BenchmarkMatMul(b *testing.B) {
	d := New(0)
	for _, s := range []struct {
		m, n, k int
		ta, tb  bool
	}{{1024, 2048, 768, false, true}, {1024, 768, 2048, false, false}, {2048, 768, 1024, true, false}} {
		for _, bf := range []bool{false, true} {
			b.Run(fmt.Sprintf("%dx%dx%d/ta=%v/tb=%v/bf16=%v", s.m, s.n, s.k, s.ta, s.tb, bf), func(b *testing.B) {
				a, w, c := make([]float32, s.m*s.k), make([]float32, s.n*s.k), make([]float32, s.m*s.n)
				a16, w16 := make([]uint16, s.m*s.k), make([]uint16, s.n*s.k)
				for i := 0; i < b.N; i++ {
					if bf {
						d.MatMulBF16(c, a16, w16, s.m, s.n, s.k, engine.MatMulFlags{TransA: s.ta, TransB: s.tb})
					} else {
						d.MatMul(c, a, w, s.m, s.n, s.k, engine.MatMulFlags{TransA: s.ta, TransB: s.tb})
					}
				}
				b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
