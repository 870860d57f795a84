package engine_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"hone/engine"
)

// denseQuant is a QuantMatrix holding W in fp32: DequantizeRows copies.
type denseQuant struct {
	w          []float32
	rows, cols int
}

func (d *denseQuant) MatVec(y, x []float32, n int, acc bool, threads int) { panic("unused") }
func (d *denseQuant) DequantizeRows(dst []float32, o0, o1 int) {
	copy(dst[:(o1-o0)*d.cols], d.w[o0*d.cols:o1*d.cols])
}
func (d *denseQuant) Bytes() int             { return 4 * len(d.w) }
func (d *denseQuant) Dims() (rows, cols int) { return d.rows, d.cols }

// prefillBands is the band product quantMatMul computed before it wrote
// one-band products straight to y and reused its scratches: every band
// into a fresh scratch, copied or added into y's columns.
func prefillBands(dev engine.Device, q engine.QuantMatrix, y, x []float32, n, in, out int, acc bool) {
	band := max(1, min(out, (1<<20)/in))
	w := make([]float32, band*in)
	tmp := make([]float32, n*band)
	for o0 := 0; o0 < out; o0 += band {
		r := min(band, out-o0)
		q.DequantizeRows(w[:r*in], o0, o0+r)
		dev.MatMul(tmp[:n*r], x[:n*in], w[:r*in], n, r, in, engine.MatMulFlags{TransB: true})
		for i := 0; i < n; i++ {
			dst, src := y[i*out+o0:i*out+o0+r], tmp[i*r:(i+1)*r]
			if acc {
				for j, v := range src {
					dst[j] += v
				}
			} else {
				copy(dst, src)
			}
		}
	}
}

// A quantized prompt product (quantMatMul) is bit for bit the band
// algorithm's, overwriting and accumulating, for W of one band (768 rows)
// and of several (3072 rows of 768; 768 rows of 3072, bands of 341), a
// shorter prompt after a longer one (reused scratch), and rows in place.
func TestQuantMatMulMatchesBands(t *testing.T) {
	dev := openCPU(t)
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = rng.Float32()*2 - 1
		}
		return s
	}
	for _, c := range []struct{ n, in, out int }{{70, 768, 768}, {33, 768, 3072}, {70, 3072, 768}, {5, 64, 100}} {
		q := &denseQuant{w: fill(c.out * c.in), rows: c.out, cols: c.in}
		x := fill(c.n * c.in)
		for _, acc := range []bool{false, true} {
			t.Run(fmt.Sprintf("n%d_%dx%d_acc%v", c.n, c.out, c.in, acc), func(t *testing.T) {
				want := fill(c.n * c.out)
				got := append([]float32(nil), want...)
				prefillBands(dev, q, want, x, c.n, c.in, c.out, acc)
				engine.QuantMatMulOn(dev, q, got, x, c.n, c.in, c.out, acc)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("y[%d,%d] = %v, want %v", i/c.out, i%c.out, got[i], want[i])
					}
				}
			})
		}
	}
}
