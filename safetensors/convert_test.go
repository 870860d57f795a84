package safetensors

import (
	"math"
	"math/rand/v2"
	"testing"
)

func f32(bits uint32) float32 { return math.Float32frombits(bits) }

func TestFloat32ToBF16Known(t *testing.T) {
	tests := []struct {
		name string
		in   float32
		want uint16
	}{
		{"one", 1, 0x3F80},
		{"minus two", -2, 0xC000},
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"pi rounds down", math.Pi, 0x4049}, // 0x40490FDB: low half 0x0FDB < 0x8000
		{"tie to even stays", f32(0x3F808000), 0x3F80},
		{"tie to even rounds up", f32(0x3F818000), 0x3F82},
		{"above tie", f32(0x3F808001), 0x3F81},
		{"below tie", f32(0x3F807FFF), 0x3F80},
		{"max float32 overflows to inf", math.MaxFloat32, 0x7F80},
		{"inf", float32(math.Inf(1)), 0x7F80},
		{"-inf", float32(math.Inf(-1)), 0xFF80},
		{"smallest f32 subnormal", f32(1), 0x0000},
		{"f32 subnormal rounds up", f32(0x00008000 + 0x00010000), 0x0002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Float32ToBF16(tt.in); got != tt.want {
				t.Errorf("Float32ToBF16(%g [%#08x]) = %#04x, want %#04x", tt.in, math.Float32bits(tt.in), got, tt.want)
			}
		})
	}
	for _, nan := range []uint32{0x7FC00000, 0x7F800001, 0xFFC00000, 0x7F80FFFF} {
		h := Float32ToBF16(f32(nan))
		if !math.IsNaN(float64(BF16ToFloat32(h))) {
			t.Errorf("Float32ToBF16(NaN %#08x) = %#04x, not a NaN", nan, h)
		}
		if h>>15 != uint16(nan>>31) {
			t.Errorf("Float32ToBF16(NaN %#08x) = %#04x lost the sign", nan, h)
		}
	}
}

func TestBF16RoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := BF16ToFloat32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("BF16ToFloat32(%#04x) = %#08x", h, math.Float32bits(f))
		}
		back := Float32ToBF16(f)
		if math.IsNaN(float64(f)) {
			if !math.IsNaN(float64(BF16ToFloat32(back))) {
				t.Fatalf("NaN %#04x became %#04x", h, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("bf16 %#04x -> %g -> %#04x", h, f, back)
		}
	}
}

func TestFloat32ToF16Known(t *testing.T) {
	tests := []struct {
		name string
		in   float32
		want uint16
	}{
		{"one", 1, 0x3C00},
		{"minus two", -2, 0xC000},
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"0.1", 0.1, 0x2E66},
		{"max half", 65504, 0x7BFF},
		{"just below overflow tie", 65519.99, 0x7BFF},
		{"overflow tie goes to inf", 65520, 0x7C00},
		{"overflow", 1e6, 0x7C00},
		{"negative overflow", -1e6, 0xFC00},
		{"inf", float32(math.Inf(1)), 0x7C00},
		{"-inf", float32(math.Inf(-1)), 0xFC00},
		{"smallest normal", 0x1p-14, 0x0400},
		{"largest subnormal", 0x3FFp-24, 0x03FF},
		{"smallest subnormal", 0x1p-24, 0x0001},
		{"half smallest subnormal ties to zero", 0x1p-25, 0x0000},
		{"above half smallest subnormal", 0x1.8p-25, 0x0001},
		{"subnormal tie rounds to even 2", 0x3p-25, 0x0002},
		{"subnormal tie stays even 2", 0x5p-25, 0x0002},
		{"subnormal rounds up into normal", 0x7FFp-25, 0x0400},
		{"tiny underflow", 1e-10, 0x0000},
		{"negative tiny underflow", -1e-10, 0x8000},
		{"f32 subnormal", f32(1), 0x0000},
		{"normal tie to even stays", 1 + 0x1p-11, 0x3C00},
		{"normal tie to even rounds up", 1 + 0x3p-11, 0x3C02},
		{"above tie", 1 + 0x1p-11 + 0x1p-20, 0x3C01},
		{"mantissa carry into exponent", 2 - 0x1p-12, 0x4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Float32ToF16(tt.in); got != tt.want {
				t.Errorf("Float32ToF16(%g) = %#04x, want %#04x", tt.in, got, tt.want)
			}
		})
	}
	for _, nan := range []uint32{0x7FC00000, 0x7F800001, 0xFFC00000} {
		h := Float32ToF16(f32(nan))
		if h&0x7C00 != 0x7C00 || h&0x3FF == 0 || h>>15 != uint16(nan>>31) {
			t.Errorf("Float32ToF16(NaN %#08x) = %#04x, want a NaN with the same sign", nan, h)
		}
	}
}

func TestF16ToFloat32Known(t *testing.T) {
	tests := []struct {
		in   uint16
		want float64
	}{
		{0x3C00, 1},
		{0xC000, -2},
		{0x7BFF, 65504},
		{0x0001, 0x1p-24},
		{0x03FF, 0x3FFp-24},
		{0x0400, 0x1p-14},
		{0x8001, -0x1p-24},
		{0x7C00, math.Inf(1)},
		{0xFC00, math.Inf(-1)},
		{0x3555, 0x555p-10 * 0x1p-2}, // 0.333251953125
	}
	for _, tt := range tests {
		if got := F16ToFloat32(tt.in); float64(got) != tt.want {
			t.Errorf("F16ToFloat32(%#04x) = %g, want %g", tt.in, got, tt.want)
		}
	}
	if got := F16ToFloat32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("F16ToFloat32(0x8000) = %g, want -0", got)
	}
	if got := F16ToFloat32(0x7E00); !math.IsNaN(float64(got)) {
		t.Errorf("F16ToFloat32(0x7E00) = %g, want NaN", got)
	}
}

func TestF16RoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := F16ToFloat32(h)
		back := Float32ToF16(f)
		if h&0x7C00 == 0x7C00 && h&0x3FF != 0 {
			if !math.IsNaN(float64(f)) || back&0x7C00 != 0x7C00 || back&0x3FF == 0 {
				t.Fatalf("NaN %#04x -> %g -> %#04x", h, f, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("f16 %#04x -> %g -> %#04x", h, f, back)
		}
	}
}

// refF16 finds the correctly rounded half by brute force over neighbours,
// independently of the bit tricks in Float32ToF16.
func refF16(f float32) uint16 {
	x := float64(f)
	if math.Abs(x) >= 65520 { // halfway between max half and 2^16
		if x < 0 {
			return 0xFC00
		}
		return 0x7C00
	}
	var sign uint16
	if math.Signbit(x) {
		sign, x = 0x8000, -x
	}
	// Positive halves are ordered like their bit patterns; binary search the
	// largest h with value <= x, then compare to h+1.
	lo, hi := uint16(0), uint16(0x7BFF)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if float64(F16ToFloat32(mid)) <= x {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo == 0x7BFF {
		return sign | lo
	}
	dl := x - float64(F16ToFloat32(lo))
	du := float64(F16ToFloat32(lo+1)) - x
	if du < dl || (du == dl && lo&1 == 1) {
		lo++
	}
	return sign | lo
}

func TestFloat32ToF16AgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		var f float32
		if i%2 == 0 {
			// Concentrate on the half range, including subnormals.
			f = float32(math.Ldexp(r.Float64()*2-1, r.IntN(44)-26))
		} else {
			f = f32(r.Uint32())
		}
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			continue
		}
		if got, want := Float32ToF16(f), refF16(f); got != want {
			t.Fatalf("Float32ToF16(%g [%#08x]) = %#04x, reference %#04x", f, math.Float32bits(f), got, want)
		}
	}
}

// The parallel path must agree with element-wise conversion.
func TestDecodeEncodeLarge(t *testing.T) {
	n := parallelThreshold + 13
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(i%4099)*0.37 - 700
	}
	for _, dt := range []DType{F32, BF16, F16} {
		buf := make([]byte, n*dt.Size())
		encode(buf, src, dt)
		got := make([]float32, n)
		decode(got, buf, dt)
		for i, v := range src {
			var want float32
			switch dt {
			case F32:
				want = v
			case BF16:
				want = BF16ToFloat32(Float32ToBF16(v))
			case F16:
				want = F16ToFloat32(Float32ToF16(v))
			}
			if math.Float32bits(got[i]) != math.Float32bits(want) {
				t.Fatalf("%s element %d: got %g want %g", dt, i, got[i], want)
			}
		}
	}
}

func benchmarkDecode(b *testing.B, dt DType) {
	const n = 1 << 22
	src := make([]float32, n)
	for i := range src {
		src[i] = float32(i) * 1e-3
	}
	buf := make([]byte, n*dt.Size())
	encode(buf, src, dt)
	dst := make([]float32, n)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		decode(dst, buf, dt)
	}
}

func BenchmarkDecodeF32(b *testing.B)  { benchmarkDecode(b, F32) }
func BenchmarkDecodeBF16(b *testing.B) { benchmarkDecode(b, BF16) }
func BenchmarkDecodeF16(b *testing.B)  { benchmarkDecode(b, F16) }

func BenchmarkEncodeBF16(b *testing.B) {
	src := make([]float32, 1<<22)
	for i := range src {
		src[i] = float32(i) * 1e-3
	}
	buf := make([]byte, len(src)*2)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		encode(buf, src, BF16)
	}
}
