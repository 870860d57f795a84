package cpu

import (
	"math/rand/v2"
	"testing"

	"hone/engine"
)

// BenchmarkLionW is BenchmarkAdamW's shape for LionW: one moment instead
// of two, so one fewer stream read and written per element.
func BenchmarkLionW(b *testing.B) {
	d, r := New(0), rand.New(rand.NewPCG(1, 1))
	const n = 16 << 20
	p, g := randSlice(r, n), randSlice(r, n)
	m, p16 := make([]float32, n), make([]uint16, n)
	b.SetBytes(4*5*n + 2*n)
	for i := 0; i < b.N; i++ {
		d.LionW(p, g, m, p16, engine.LionWStep{LR: 1e-4, Beta1: 0.9, Beta2: 0.99, Decay: 1 - 1e-4})
	}
}
