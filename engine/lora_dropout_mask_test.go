package engine

import (
	"math"
	"runtime"
	"slices"
	"testing"
)

// A dropout mask zeroes a fraction p of its elements (within 5 standard
// deviations), scales the rest by 1/(1-p), is the same whatever the number
// of CPUs or chunks of rows it is drawn in, and differs between streams
// and seeds.
func TestDropoutMask(t *testing.T) {
	const rows, in, p = 64, 512, 0.3
	mask := make([]float32, rows*in)
	dropoutMask(mask, 7, 3, 0, rows, in, p)
	zeros := 0
	for _, v := range mask {
		switch v {
		case 0:
			zeros++
		case float32(1 / (1 - p)):
		default:
			t.Fatalf("mask value %v: want 0 or %v", v, float32(1/(1-p)))
		}
	}
	n := float64(len(mask))
	if sd := math.Sqrt(n * p * (1 - p)); math.Abs(float64(zeros)-n*p) > 5*sd {
		t.Errorf("%d of %d elements dropped, want about %.0f ± %.0f", zeros, len(mask), n*p, sd)
	}
	prev := runtime.GOMAXPROCS(1)
	one := make([]float32, rows*in)
	dropoutMask(one, 7, 3, 0, rows, in, p)
	runtime.GOMAXPROCS(prev)
	if !slices.Equal(one, mask) {
		t.Error("the mask depends on the number of CPUs")
	}
	chunked := make([]float32, rows*in)
	for r0 := 0; r0 < rows; r0 += 24 { // the MLP's chunks: rows r0.. of the batch
		n := min(24, rows-r0)
		dropoutMask(chunked[r0*in:(r0+n)*in], 7, 3, r0, n, in, p)
	}
	if !slices.Equal(chunked, mask) {
		t.Error("the mask drawn in chunks of 24 rows differs from the whole batch's")
	}
	for _, o := range []struct{ seed, stream uint64 }{{7, 4}, {8, 3}} {
		other := make([]float32, rows*in)
		dropoutMask(other, o.seed, o.stream, 0, rows, in, p)
		if slices.Equal(other, mask) {
			t.Errorf("seed %d stream %d drew the mask of seed 7 stream 3", o.seed, o.stream)
		}
	}
}
