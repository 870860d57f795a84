package gguf_test

import (
	"math"
	"testing"

	"hone/gguf"
)

func TestQuantizeRoundTrip(t *testing.T) {
	// A row with a zero block, an outlier, a constant block and ordinary values.
	x := make([]float32, 4*gguf.QK)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)*0.37)) * float32(1+i%7)
	}
	for i := 0; i < gguf.QK; i++ {
		x[gguf.QK+i] = 0
		x[3*gguf.QK+i] = 0.25
	}
	x[2*gguf.QK+5] = 60
	// Worst-case error of each element relative to its block's absmax: half
	// a quantization step, a whole one at the clamped end of Q4_0/Q5_0 (ggml
	// maps the largest magnitude to -8 (-16) and clamps its opposite to 7
	// (15)), and looser for the k-quants' 6-bit sub-block scales.
	for _, c := range []struct {
		typ gguf.TensorType
		tol float64
	}{{gguf.Q8_0, 0.6 / 127}, {gguf.Q6_K, 0.05}, {gguf.Q5_K, 0.06}, {gguf.Q5_1, 1.01 / 31}, {gguf.Q5_0, 1.01 / 16},
		{gguf.Q4_K, 0.1}, {gguf.Q4_0, 1.01 / 8}} {
		buf := make([]byte, c.typ.RowBytes(len(x)))
		gguf.QuantizeRow(c.typ, buf, x)
		y := make([]float32, len(x))
		gguf.DequantizeRow(c.typ, y, buf)
		bs := c.typ.BlockSize()
		for b := 0; b < len(x)/bs; b++ {
			var amax float64
			for _, v := range x[b*bs : (b+1)*bs] {
				amax = math.Max(amax, math.Abs(float64(v)))
			}
			for i := b * bs; i < (b+1)*bs; i++ {
				if d := math.Abs(float64(y[i] - x[i])); d > c.tol*amax+1e-7 {
					t.Fatalf("%v: element %d = %g, decoded %g (block absmax %g, tol %g)", c.typ, i, x[i], y[i], amax, c.tol*amax)
				}
			}
		}
		if y[gguf.QK+3] != 0 {
			t.Errorf("%v: a zero block decodes to %g", c.typ, y[gguf.QK+3])
		}
	}
}

// TestQuantizeByHand checks blocks worked out by hand from ggml's
// definitions (block_q4_0, block_q8_0 and their reference quantizers).
func TestQuantizeByHand(t *testing.T) {
	x := make([]float32, 32)
	for j := range x {
		x[j] = float32(j - 16) // -16..15: Q4_0's d = -16 / -8 = 2
	}
	b := make([]byte, gguf.Q4_0.RowBytes(32))
	gguf.QuantizeRow(gguf.Q4_0, b, x)
	// d as fp16 (2.0 = 0x4000), then nibbles q = trunc(x/2 + 8.5) (at most
	// 15): element j in the low nibble of byte j, element j+16 in the high.
	if b[0] != 0x00 || b[1] != 0x40 {
		t.Fatalf("Q4_0 scale bytes %x, want 00 40", b[:2])
	}
	for j := 0; j < 16; j++ {
		lo, hi := int(float64(j-16)/2+8.5), min(15, int(float64(j)/2+8.5))
		if want := byte(lo | hi<<4); b[2+j] != want {
			t.Errorf("Q4_0 byte %d = %#x, want %#x", 2+j, b[2+j], want)
		}
	}
	y := make([]float32, 32)
	gguf.DequantizeRow(gguf.Q4_0, y, b)
	if y[0] != -16 || y[31] != 14 || y[17] != 2 || y[16] != 0 {
		t.Errorf("Q4_0 decodes to %v", y)
	}
	// Q8_0: d = 127/127 = 1 (fp16 0x3c00), q = round(x), ties away from zero.
	for j := range x {
		x[j] = float32(j) - 15.5
	}
	x[31] = 127
	b = make([]byte, gguf.Q8_0.RowBytes(32))
	gguf.QuantizeRow(gguf.Q8_0, b, x)
	if b[0] != 0x00 || b[1] != 0x3c || int8(b[2]) != -16 || int8(b[2+15]) != -1 || int8(b[2+16]) != 1 || int8(b[2+31]) != 127 {
		t.Errorf("Q8_0 block %v", b)
	}
}

func BenchmarkQuantizeQ4K(b *testing.B) {
	x := make([]float32, 64*gguf.QK)
	for i := range x {
		x[i] = float32(math.Sin(float64(i) * 0.1))
	}
	buf := make([]byte, gguf.Q4_K.RowBytes(len(x)))
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		gguf.QuantizeRow(gguf.Q4_K, buf, x)
	}
}
