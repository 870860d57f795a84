package cpu

import (
	"math/rand/v2"
	"testing"
)

// The row gathers and scatters of the expert layers equal plain loops, with
// repeated indices (a token routed to several experts) and several threads,
// which must not race on a shared destination row.
func TestRowOpsMatchLoops(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const rows, n, dim = 7, 19, 13
	d := New(4)
	x, y, scale := randSlice(r, rows*dim), randSlice(r, n*dim), randSlice(r, n)
	idx := make([]int32, n)
	for j := range idx {
		idx[j] = int32(r.IntN(rows))
	}
	idx[1], idx[2] = 3, 3

	for _, s := range [][]float32{nil, scale} {
		got, want := make([]float32, n*dim), make([]float32, n*dim)
		d.GatherRows(got, x, idx, s, n, dim)
		for j := 0; j < n; j++ {
			for i := 0; i < dim; i++ {
				want[j*dim+i] = x[int(idx[j])*dim+i]
				if s != nil {
					want[j*dim+i] *= s[j]
				}
			}
		}
		if e := maxRel(got, want); e != 0 {
			t.Errorf("GatherRows (scale %v): error %g", s != nil, e)
		}

		got, want = append([]float32(nil), x...), append([]float32(nil), x...)
		d.ScatterAddRows(got, y, idx, s, n, dim)
		for j := 0; j < n; j++ {
			for i := 0; i < dim; i++ {
				v := y[j*dim+i]
				if s != nil {
					v *= s[j]
				}
				want[int(idx[j])*dim+i] += v
			}
		}
		if e := maxRel(got, want); e > 1e-6 {
			t.Errorf("ScatterAddRows (scale %v): relative error %g", s != nil, e)
		}
	}

	got, want := make([]float32, n), make([]float32, n)
	d.RowDots(got, x, idx, y, n, dim)
	for j := 0; j < n; j++ {
		for i := 0; i < dim; i++ {
			want[j] += x[int(idx[j])*dim+i] * y[j*dim+i]
		}
	}
	if e := maxRel(got, want); e > 1e-6 {
		t.Errorf("RowDots: relative error %g", e)
	}
}
