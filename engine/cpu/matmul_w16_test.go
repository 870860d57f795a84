package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"hone/engine"
)

// MatMulW16 equals the naive sum, in float64, of each activation times the
// widened bf16 weight, for row and column counts that leave partial tiles
// and panels, k that leaves a partial vector, overwriting and adding, on
// one and two threads, with the AVX-512 kernel (where the CPU has it) and
// the portable one.
func TestMatMulW16MatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	paths := []bool{false}
	if w16SIMD {
		paths = append(paths, true)
	} else {
		t.Log("no AVX-512 here: only the portable kernel is checked")
	}
	defer func(v bool) { w16SIMD = v }(w16SIMD)
	for _, simd := range paths {
		for _, threads := range []int{1, 2} {
			for _, sh := range [][3]int{{1, 1, 1}, {1, 300, 768}, {2, 7, 33}, {5, 131, 15}, {3, 4, 16}, {67, 70, 40}, {130, 9, 17}} {
				for _, acc := range []bool{false, true} {
					m, n, k := sh[0], sh[1], sh[2]
					t.Run(fmt.Sprintf("simd=%v/threads=%d/%dx%dx%d/acc=%v", simd, threads, m, n, k, acc), func(t *testing.T) {
						w16SIMD = simd
						d := New(threads)
						a, c0 := randSlice(r, m*k), randSlice(r, m*n)
						b := make([]uint16, n*k)
						for i := range b {
							b[i] = toBF16(float32(r.NormFloat64()))
						}
						c := append([]float32(nil), c0...)
						d.MatMulW16(c, a, b, m, n, k, acc)
						for i := 0; i < m; i++ {
							for j := 0; j < n; j++ {
								var s, abs float64
								for p := 0; p < k; p++ {
									w := float64(math.Float32frombits(uint32(b[j*k+p]) << 16))
									s += float64(a[i*k+p]) * w
									abs += math.Abs(float64(a[i*k+p]) * w)
								}
								if acc {
									s += float64(c0[i*n+j])
									abs += math.Abs(float64(c0[i*n+j]))
								}
								// fp32 summation of k terms: error within a few ulps of the absolute sum.
								if e := math.Abs(float64(c[i*n+j]) - s); e > 1e-6*abs*float64(k+1) {
									t.Fatalf("c[%d,%d] = %v, want %v (error %.3g)", i, j, c[i*n+j], s, e)
								}
							}
						}
					})
				}
			}
		}
	}
}

// BenchmarkDecodeLinear compares the linear layers of one decode step (m
// rows: 1 token, 8 streams, a 64-token prompt chunk) on bf16 weights
// (MatMulW16), fp32 weights and bf16 operands in oneDNN, in weight GB/s read.
func BenchmarkDecodeLinear(b *testing.B) {
	d := New(2)
	for _, s := range [][3]int{{1, 128256, 768}, {1, 2048, 768}, {1, 768, 2048}, {8, 2048, 768}, {64, 2048, 768}} {
		m, n, k := s[0], s[1], s[2]
		a, w, c := make([]float32, m*k), make([]float32, n*k), make([]float32, m*n)
		a16, w16 := make([]uint16, m*k), make([]uint16, n*k)
		for _, kind := range []string{"w16", "fp32", "dnnl-bf16"} {
			b.Run(fmt.Sprintf("%dx%dx%d/%s", m, n, k, kind), func(b *testing.B) {
				bytes := 2 * n * k
				for i := 0; i < b.N; i++ {
					switch kind {
					case "w16":
						d.MatMulW16(c, a, w16, m, n, k, false)
					case "fp32":
						bytes = 4 * n * k
						d.MatMul(c, a, w, m, n, k, engine.MatMulFlags{TransB: true})
					default:
						d.MatMulBF16(c, a16, w16, m, n, k, engine.MatMulFlags{TransB: true})
					}
				}
				b.ReportMetric(float64(bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}
