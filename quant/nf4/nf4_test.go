package nf4

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The code table is bitsandbytes' create_normal_map(offset=0.9677083):
// the standard normal's quantiles at 8 points from 0.9677083 down to 0.5
// (exclusive) for the positive side, 7 for the negative, and an exact 0,
// divided by the largest. Computed here from the inverse normal CDF.
func TestCodeIsNormalQuantiles(t *testing.T) {
	const offset = 0.9677083
	ppf := func(p float64) float64 { return math.Sqrt2 * math.Erfinv(2*p-1) }
	linspace := func(a, b float64, n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = a + (b-a)*float64(i)/float64(n-1)
		}
		return v
	}
	var want []float64
	for _, p := range linspace(offset, 0.5, 9)[:8] {
		want = append(want, ppf(p))
	}
	want = append(want, 0)
	for _, p := range linspace(offset, 0.5, 8)[:7] {
		want = append(want, -ppf(p))
	}
	top := ppf(offset)
	// Sort ascending: negatives (largest magnitude first), 0, positives.
	var sorted []float64
	for i := 9; i <= 15; i++ {
		sorted = append(sorted, want[i]/top)
	}
	sorted = append(sorted, 0)
	for i := 7; i >= 0; i-- {
		sorted = append(sorted, want[i]/top)
	}
	for i, w := range sorted {
		if d := math.Abs(float64(Code[i]) - w); d > 1e-6 {
			t.Errorf("Code[%d] = %.9f, the normal quantile gives %.9f", i, Code[i], w)
		}
	}
}

// A block worked by hand: absmax 2 (from -2), and each scaled value goes
// to the nearest code: 0.5 lies below the midpoint 0.50166 of 0.44071 and
// 0.56262 (index 12); 0.1 below 0.12026 (index 8); -0.2 above -0.23461
// (index 5). Values are packed two to a byte, the first in the high nibble.
func TestQuantizeHandBlock(t *testing.T) {
	src := make([]float32, 64)
	copy(src, []float32{-2, 1, 0.2, -0.4, 0, 2})
	q := Quantize(src, false)
	if q.Absmax[0] != 2 {
		t.Fatalf("absmax = %v, want 2", q.Absmax[0])
	}
	wantIdx := []uint8{0, 12, 8, 5, 7, 15}
	for i, w := range wantIdx {
		b := q.Packed[i/2]
		got := b >> 4
		if i%2 == 1 {
			got = b & 15
		}
		if got != w {
			t.Errorf("value %d (%v): index %d, want %d", i, src[i], got, w)
		}
	}
	if q.Packed[0] != 0x0c || q.Packed[1] != 0x85 {
		t.Errorf("packed bytes %#x %#x, want 0x0c 0x85", q.Packed[0], q.Packed[1])
	}
	got := make([]float32, 64)
	q.Dequantize(got, 0)
	want := []float32{-2, 2 * 0.44070982933044434, 2 * 0.07958029955625534, 2 * -0.18477343022823334, 0, 2}
	for i, w := range want {
		if got[i] != w {
			t.Errorf("dequantized %d = %v, want %v", i, got[i], w)
		}
	}
}

// Every value dequantizes to the code (times its block's absmax) nearest
// to it, over blocks of several scales and a ragged last block.
func TestQuantizeRoundsToNearestCode(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	src := make([]float32, 64*5+17)
	for i := range src {
		src[i] = float32(r.NormFloat64()) * float32(1+i/64)
	}
	q := Quantize(src, false)
	got := make([]float32, len(src))
	q.Dequantize(got, 0)
	for i, x := range src {
		s := q.Absmax[i/64]
		best := math.Inf(1)
		for _, c := range Code {
			best = math.Min(best, math.Abs(float64(c*s-x)))
		}
		if d := math.Abs(float64(got[i] - x)); d > best+1e-6*float64(s) {
			t.Fatalf("value %d = %v dequantizes to %v (error %g); the nearest code is %g away", i, x, got[i], d, best)
		}
	}
	// A dequantized range that starts at a later block equals the same
	// values of the whole.
	part := make([]float32, 100)
	q.Dequantize(part, 128)
	for i := range part {
		if part[i] != got[128+i] {
			t.Fatalf("Dequantize from 128: value %d = %v, want %v", i, part[i], got[128+i])
		}
	}
}

// bitsandbytes' signed dynamic 8-bit code, by hand: its smallest positive
// value is 10⁻⁶ times the midpoint 0.55 of linspace(0.1, 1, 2), the next
// 10⁻⁵ times 0.325 and 0.775, its largest magnitudes 1 and the last of the
// 64 midpoints of linspace(0.1, 1, 65), 0.99296875.
func TestDynamicCode(t *testing.T) {
	c := DynamicCode
	if c[255] != 1 || math.Abs(float64(c[254])-0.99296875) > 1e-7 || math.Abs(float64(c[0])+0.99296875) > 1e-7 {
		t.Errorf("ends %v %v ... %v, want -0.99296875, 0.99296875, 1", c[0], c[254], c[255])
	}
	zero := 0
	for i := range c {
		if c[i] == 0 {
			zero = i
		}
		if i > 0 && c[i] <= c[i-1] {
			t.Fatalf("code not strictly ascending at %d: %v, %v", i, c[i-1], c[i])
		}
	}
	for k, w := range []float64{0.55e-6, 0.325e-5, 0.775e-5} {
		if g := float64(c[zero+1+k]); math.Abs(g-w) > 1e-6*w {
			t.Errorf("positive value %d = %g, want %g", k, g, w)
		}
	}
}

// Double quantization keeps the mean of the scales in fp32 and each scale
// within half a step of the dynamic code (at most 0.9/128 of its
// 256-block's largest deviation from the mean), and stores about 8.1 bits
// of scale per block of 64 instead of 32.
func TestDoubleQuantization(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	src := make([]float32, 64*600)
	for i := range src {
		src[i] = float32(r.NormFloat64() * 0.02 * (1 + float64(i%3000)/3000))
	}
	single, double := Quantize(src, false), Quantize(src, true)
	var mean float64
	for _, a := range single.Absmax {
		mean += float64(a)
	}
	mean /= float64(len(single.Absmax))
	if math.Abs(float64(double.Offset)-mean) > 1e-6*mean {
		t.Errorf("offset %v, want the mean absmax %v", double.Offset, mean)
	}
	for b, a := range single.Absmax {
		if d, step := math.Abs(float64(double.Scale(b)-a)), float64(double.Absmax2[b/256])*0.9/128; d > step*1.0001 {
			t.Fatalf("block %d: scale %v, absmax %v: error %g over %g", b, double.Scale(b), a, d, step)
		}
	}
	if got, want := double.Bytes(), StorageBytes(int64(len(src)), true); got != want {
		t.Errorf("Bytes %d, StorageBytes %d", got, want)
	}
	if got, want := single.Bytes(), StorageBytes(int64(len(src)), false); got != want {
		t.Errorf("Bytes %d, StorageBytes %d", got, want)
	}
	// The packed indices are those of the single-quantized tensor: only the
	// scales differ.
	for i := range single.Packed {
		if single.Packed[i] != double.Packed[i] {
			t.Fatalf("packed byte %d differs", i)
		}
	}
}

func TestDequantizeBF16(t *testing.T) {
	src := []float32{0.3, -0.7, 1.1}
	q := Quantize(src, false)
	f := make([]float32, 3)
	b := make([]uint16, 3)
	q.Dequantize(f, 0)
	q.DequantizeBF16(b, 0)
	for i := range f {
		if g := math.Float32frombits(uint32(b[i]) << 16); math.Abs(float64(g-f[i])) > math.Abs(float64(f[i]))/256 {
			t.Errorf("bf16 value %d = %v, fp32 %v", i, g, f[i])
		}
	}
}

// Index's table gives what the search of the thresholds gives, near every
// threshold (each side, and on it) and over a fine sweep of [-1, 1].
func TestIndexTableMatchesSearch(t *testing.T) {
	check := func(x float32) {
		if got, want := Index(x), indexSearch(x); got != want {
			t.Fatalf("Index(%v) = %d, the search gives %d", x, got, want)
		}
	}
	for _, th := range thresholds {
		for _, x := range []float32{th, math.Nextafter32(th, 2), math.Nextafter32(th, -2)} {
			check(x)
		}
	}
	for i := 0; i <= 1<<20; i++ {
		check(float32(i)/(1<<19) - 1)
	}
	check(-1)
	check(1)
}

// Dot of any range, starting inside a block or on an odd value, is the
// float64 dot product of the dequantized values with x up to fp32
// rounding: |error| ≤ (len+4)·2⁻²⁴·Σ|w·x| (recursive summation's bound,
// with the code×scale products), for both kinds of scales.
func TestDotMatchesDequantized(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	src := make([]float32, 64*20+7)
	for i := range src {
		src[i] = float32(r.NormFloat64()) * float32(1+i%97) * 1e-2
	}
	for _, double := range []bool{false, true} {
		q := Quantize(src, double)
		w := make([]float32, len(src))
		q.Dequantize(w, 0)
		for _, span := range [][2]int{{0, 64 * 20}, {0, len(src)}, {32, 200}, {33, 1}, {33, 96}, {127, 130}, {64 * 19, 64 + 7}} {
			lo, n := span[0], span[1]
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(r.NormFloat64())
			}
			var want, mag float64
			for k, v := range x {
				want += float64(w[lo+k]) * float64(v)
				mag += math.Abs(float64(w[lo+k]) * float64(v))
			}
			got := q.Dot(x, lo)
			if bound := float64(n+4) * 0x1p-24 * mag; math.Abs(float64(got)-want) > bound {
				t.Errorf("double=%v: Dot of [%d, %d) = %v, dequantized gives %v (bound %.3g)", double, lo, lo+n, got, want, bound)
			}
		}
	}
}
