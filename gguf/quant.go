package gguf

// Block-quantized ggml types: their layouts and ggml's reference
// quantizers (ggml-quants.c, quantize_row_*_ref), reimplemented from the
// definitions. A row of n elements is n/BlockSize blocks stored back to
// back; each block is a few scales followed by packed integers.
//
// Rounding: the arithmetic is float32 in the order ggml's reference code
// uses, nearest_int is round-half-to-even (what ggml's 1.5*2^23 trick
// computes), Q8_0 uses roundf (half away from zero) and Q4_0/Q5_x truncate
// x+offset+0.5 as ggml does, and every fp16 scale is rounded to nearest
// even (F16C). The searches (make_qkx2_quants for Q4_K/Q5_K,
// make_qx_quants with rmse_type 1 for Q6_K) try the same candidate scales
// in the same order. The outputs can still differ from a given llama.cpp
// build in the last bit of a scale: GCC contracts a*b+c into FMA where the
// build targets it, which Go does not do on amd64; such a difference moves
// a scale by one ulp and can flip an element whose value sits on a
// rounding boundary.

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"hone/safetensors"
)

// The quantized ggml types hone writes and reads.
const (
	Q4_0 TensorType = 2
	Q5_0 TensorType = 6
	Q5_1 TensorType = 7
	Q8_0 TensorType = 8
	Q4_K TensorType = 12
	Q5_K TensorType = 13
	Q6_K TensorType = 14
)

// QK is the number of elements of a super-block of the k-quants.
const QK = 256

// BlockSize is the number of elements one block of t holds (1 for the
// float types, 0 for a type this package does not know).
func (t TensorType) BlockSize() int {
	switch t {
	case F32, F16, BF16:
		return 1
	case Q4_0, Q5_0, Q5_1, Q8_0:
		return 32
	case Q4_K, Q5_K, Q6_K:
		return QK
	}
	return 0
}

// BlockBytes is the size in bytes of one block of t.
func (t TensorType) BlockBytes() int {
	switch t {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case Q4_0:
		return 2 + 16
	case Q5_0:
		return 2 + 4 + 16
	case Q5_1:
		return 2 + 2 + 4 + 16
	case Q8_0:
		return 2 + 32
	case Q4_K:
		return 2 + 2 + 12 + QK/2
	case Q5_K:
		return 2 + 2 + 12 + QK/8 + QK/2
	case Q6_K:
		return QK/2 + QK/4 + QK/16 + 2
	}
	return 0
}

// Quantized reports whether t is a block-quantized type.
func (t TensorType) Quantized() bool { return t.BlockSize() > 1 }

// RowBytes is the size of a row of n elements (n a multiple of BlockSize).
func (t TensorType) RowBytes(n int) int { return n / t.BlockSize() * t.BlockBytes() }

var typeNames = map[TensorType]string{F32: "f32", F16: "f16", BF16: "bf16", Q4_0: "q4_0", Q5_0: "q5_0", Q5_1: "q5_1",
	Q8_0: "q8_0", Q4_K: "q4_K", Q5_K: "q5_K", Q6_K: "q6_K"}

func (t TensorType) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type%d", uint32(t))
}

func f16(f float32) uint16       { return safetensors.Float32ToF16(f) }
func f16f(b []byte) float32      { return safetensors.F16ToFloat32(uint16(b[0]) | uint16(b[1])<<8) }
func putF16(b []byte, f float32) { h := f16(f); b[0], b[1] = byte(h), byte(h>>8) }
func roundF16(f float32) float32 { return safetensors.F16ToFloat32(f16(f)) }
func nearestInt(f float32) int   { return int(math.RoundToEven(float64(f))) }
func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }
func abs32(f float32) float32    { return math.Float32frombits(math.Float32bits(f) &^ (1 << 31)) }
func sqrt32(f float32) float32   { return float32(math.Sqrt(float64(f))) }
func truncInt8(f float32) int    { return int(int8(int32(f))) } // C's (int8_t) of a float in range
func truncUint8(f float32) int   { return int(uint8(int32(f))) }
func u32le(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func putU32le(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// QuantizeRow writes x (a multiple of t's block size) as blocks of t into
// dst, which must be t.RowBytes(len(x)) long. Float types are encoded too.
func QuantizeRow(t TensorType, dst []byte, x []float32) {
	bs, bb := t.BlockSize(), t.BlockBytes()
	if bs == 1 {
		for i, f := range x {
			switch t {
			case F32:
				putU32le(dst[4*i:], math.Float32bits(f))
			case F16:
				h := f16(f)
				dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
			case BF16:
				h := safetensors.Float32ToBF16(f)
				dst[2*i], dst[2*i+1] = byte(h), byte(h>>8)
			}
		}
		return
	}
	var q quantizer
	for b := 0; b < len(x)/bs; b++ {
		blk, out := x[b*bs:(b+1)*bs], dst[b*bb:(b+1)*bb]
		switch t {
		case Q8_0:
			quantQ8_0(out, blk)
		case Q4_0:
			quantQ4_0(out, blk)
		case Q5_0:
			quantQ5_0(out, blk)
		case Q5_1:
			quantQ5_1(out, blk)
		case Q4_K:
			q.quantQ4K(out, blk)
		case Q5_K:
			q.quantQ5K(out, blk)
		case Q6_K:
			q.quantQ6K(out, blk)
		}
	}
}

// Quantize writes a row-major matrix of rows of cols elements as t,
// quantizing rows in parallel on up to GOMAXPROCS goroutines.
func Quantize(t TensorType, dst []byte, x []float32, cols int) {
	rows := len(x) / cols
	rb := t.RowBytes(cols)
	forRows(rows, cols, func(r0, r1 int) {
		for r := r0; r < r1; r++ {
			QuantizeRow(t, dst[r*rb:(r+1)*rb], x[r*cols:(r+1)*cols])
		}
	})
}

// Dequantize decodes a row-major matrix of t (rows of cols elements) into
// dst, in parallel over rows.
func Dequantize(t TensorType, dst []float32, src []byte, cols int) {
	rows := len(dst) / cols
	rb := t.RowBytes(cols)
	forRows(rows, cols, func(r0, r1 int) {
		for r := r0; r < r1; r++ {
			DequantizeRow(t, dst[r*cols:(r+1)*cols], src[r*rb:(r+1)*rb])
		}
	})
}

// forRows splits rows into chunks of at least ~64k elements and runs f on
// them concurrently.
func forRows(rows, cols int, f func(r0, r1 int)) {
	per := max(1, (1<<16)/max(cols, 1))
	workers := min(runtime.GOMAXPROCS(0), (rows+per-1)/per)
	if workers <= 1 {
		f(0, rows)
		return
	}
	chunk := (rows + workers - 1) / workers
	var wg sync.WaitGroup
	for r := 0; r < rows; r += chunk {
		wg.Add(1)
		go func(r0, r1 int) {
			defer wg.Done()
			f(r0, r1)
		}(r, min(rows, r+chunk))
	}
	wg.Wait()
}

// DequantizeRow decodes one row of t from src into dst.
func DequantizeRow(t TensorType, dst []float32, src []byte) {
	bs, bb := t.BlockSize(), t.BlockBytes()
	if bs == 1 {
		for i := range dst {
			switch t {
			case F32:
				dst[i] = math.Float32frombits(u32le(src[4*i:]))
			case F16:
				dst[i] = f16f(src[2*i:])
			case BF16:
				dst[i] = safetensors.BF16ToFloat32(uint16(src[2*i]) | uint16(src[2*i+1])<<8)
			}
		}
		return
	}
	for b := 0; b < len(dst)/bs; b++ {
		y, in := dst[b*bs:(b+1)*bs], src[b*bb:(b+1)*bb]
		switch t {
		case Q8_0:
			d := f16f(in)
			for j := range 32 {
				y[j] = float32(int8(in[2+j])) * d
			}
		case Q4_0:
			d := f16f(in)
			for j := range 16 {
				q := in[2+j]
				y[j] = float32(int(q&15)-8) * d
				y[j+16] = float32(int(q>>4)-8) * d
			}
		case Q5_0, Q5_1:
			d := f16f(in)
			var m float32
			o := 2
			if t == Q5_1 {
				m, o = f16f(in[2:]), 4
			}
			qh := u32le(in[o:])
			qs := in[o+4:]
			for j := range 16 {
				x0 := int(qs[j]&15) | int((qh>>j)<<4)&0x10
				x1 := int(qs[j]>>4) | int(qh>>(j+12))&0x10
				if t == Q5_0 {
					y[j], y[j+16] = float32(x0-16)*d, float32(x1-16)*d
				} else {
					y[j], y[j+16] = float32(x0)*d+m, float32(x1)*d+m
				}
			}
		case Q4_K, Q5_K:
			d, dmin := f16f(in), f16f(in[2:])
			scales := in[4:16]
			var qh, qs []byte
			if t == Q5_K {
				qh, qs = in[16:48], in[48:]
			} else {
				qs = in[16:]
			}
			for j := 0; j < QK/64; j++ {
				sc1, m1 := scaleMinK4(2*j, scales)
				sc2, m2 := scaleMinK4(2*j+1, scales)
				d1, mm1 := d*float32(sc1), dmin*float32(m1)
				d2, mm2 := d*float32(sc2), dmin*float32(m2)
				q := qs[32*j:]
				for l := range 32 {
					lo, hi := int(q[l]&15), int(q[l]>>4)
					if qh != nil {
						lo |= int(qh[l]>>(2*j)&1) << 4
						hi |= int(qh[l]>>(2*j+1)&1) << 4
					}
					y[64*j+l] = d1*float32(lo) - mm1
					y[64*j+32+l] = d2*float32(hi) - mm2
				}
			}
		case Q6_K:
			ql, qh, sc := in[:128], in[128:192], in[192:208]
			d := f16f(in[208:])
			for n := range 2 {
				l0, h0, s0 := ql[64*n:], qh[32*n:], sc[8*n:]
				yy := y[128*n:]
				for l := range 32 {
					is := l / 16
					q1 := int(l0[l]&15|(h0[l]>>0&3)<<4) - 32
					q2 := int(l0[l+32]&15|(h0[l]>>2&3)<<4) - 32
					q3 := int(l0[l]>>4|(h0[l]>>4&3)<<4) - 32
					q4 := int(l0[l+32]>>4|(h0[l]>>6&3)<<4) - 32
					yy[l] = d * float32(int8(s0[is])) * float32(q1)
					yy[l+32] = d * float32(int8(s0[is+2])) * float32(q2)
					yy[l+64] = d * float32(int8(s0[is+4])) * float32(q3)
					yy[l+96] = d * float32(int8(s0[is+6])) * float32(q4)
				}
			}
		}
	}
}

// scaleMinK4 unpacks sub-block j's 6-bit scale and min of a Q4_K/Q5_K
// super-block: sub-blocks 0-3 keep theirs in the low 6 bits of bytes j and
// j+4; 4-7 split theirs into a nibble of byte j+4 and the top 2 bits of
// bytes j-4 (scale) and j (min).
func scaleMinK4(j int, q []byte) (sc, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return q[j+4]&15 | (q[j-4]>>6)<<4, q[j+4]>>4 | (q[j]>>6)<<4
}

func quantQ8_0(out []byte, x []float32) {
	var amax float32
	for _, v := range x {
		amax = max(amax, abs32(v))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(out, d)
	for j, v := range x {
		out[2+j] = byte(int8(math.Round(float64(v * id))))
	}
}

// absMax is the element of largest magnitude, with its sign (the first one
// on ties, as ggml's loop keeps).
func absMax(x []float32) float32 {
	var amax, m float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, m = a, v
		}
	}
	return m
}

func quantQ4_0(out []byte, x []float32) {
	d := absMax(x) / -8
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(out, d)
	for j := range 16 {
		x0 := min(15, truncInt8(x[j]*id+8.5))
		x1 := min(15, truncInt8(x[j+16]*id+8.5))
		out[2+j] = byte(x0) | byte(x1)<<4
	}
}

func quantQ5_0(out []byte, x []float32) {
	d := absMax(x) / -16
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(out, d)
	var qh uint32
	for j := range 16 {
		x0 := min(31, truncInt8(x[j]*id+16.5))
		x1 := min(31, truncInt8(x[j+16]*id+16.5))
		out[6+j] = byte(x0&15) | byte(x1&15)<<4
		qh |= uint32(x0&0x10)>>4<<j | uint32(x1&0x10)>>4<<(j+16)
	}
	putU32le(out[2:], qh)
}

func quantQ5_1(out []byte, x []float32) {
	lo, hi := float32(math.MaxFloat32), float32(-math.MaxFloat32)
	for _, v := range x {
		lo, hi = min(lo, v), max(hi, v)
	}
	d := (hi - lo) / 31
	var id float32
	if d != 0 {
		id = 1 / d
	}
	putF16(out, d)
	putF16(out[2:], lo)
	var qh uint32
	for j := range 16 {
		x0 := truncUint8((x[j]-lo)*id + 0.5)
		x1 := truncUint8((x[j+16]-lo)*id + 0.5)
		out[8+j] = byte(x0&15) | byte(x1&15)<<4
		qh |= uint32(x0&0x10)>>4<<j | uint32(x1&0x10)>>4<<(j+16)
	}
	putU32le(out[4:], qh)
}

// quantizer holds the scratch of the k-quant quantizers.
type quantizer struct {
	L       [QK]int
	laux    [32]int
	weights [32]float32
	scales  [16]float32
	mins    [8]float32
}

// makeQKX2 is ggml's make_qkx2_quants: an asymmetric quantization of x
// into [0, nmax] with a scale and a min (returned as a positive offset,
// the value subtracted), chosen by trying nstep+1 candidate scales around
// nmax/(max-min) and keeping the one whose weighted least-squares fit has
// the smallest weighted squared error.
func (q *quantizer) makeQKX2(x, w []float32, L []int, nmax int, rmin, rdelta float32, nstep int) (scale, theMin float32) {
	n := len(x)
	lo, hi := x[0], x[0]
	sumW := w[0]
	sumX := sumW * x[0]
	for i := 1; i < n; i++ {
		lo, hi = min(lo, x[i]), max(hi, x[i])
		sumW += w[i]
		sumX += w[i] * x[i]
	}
	lo = min(lo, 0)
	if hi == lo {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0, -lo
	}
	fmax := float32(nmax)
	iscale := fmax / (hi - lo)
	scale = 1 / iscale
	var bestErr float32
	for i := range n {
		L[i] = clampInt(nearestInt(iscale*(x[i]-lo)), 0, nmax)
		diff := scale*float32(L[i]) + lo - x[i]
		bestErr += w[i] * (diff * diff)
	}
	laux := q.laux[:n]
	for is := 0; is <= nstep; is++ {
		iscale = (rmin + rdelta*float32(is) + fmax) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i := range n {
			l := clampInt(nearestInt(iscale*(x[i]-lo)), 0, nmax)
			laux[i] = l
			fl := float32(l)
			sumL += w[i] * fl
			sumL2 += w[i] * fl * fl
			sumXL += w[i] * fl * x[i]
		}
		D := sumW*sumL2 - sumL*sumL
		if D <= 0 {
			continue
		}
		thisScale := (sumW*sumXL - sumX*sumL) / D
		thisMin := (sumL2*sumX - sumL*sumXL) / D
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var cur float32
		for i := range n {
			diff := thisScale*float32(laux[i]) + thisMin - x[i]
			cur += w[i] * (diff * diff)
		}
		if cur < bestErr {
			copy(L[:n], laux)
			bestErr, scale, lo = cur, thisScale, thisMin
		}
	}
	return scale, -lo
}

// quantKScales is the common part of Q4_K and Q5_K: the 8 sub-blocks'
// (scale, min) fits, their 6-bit codes relative to the super-block's d and
// dmin, and the elements requantized against the coded scales into q.L.
func (q *quantizer) quantKScales(out []byte, x []float32, nmax int, rmin float32, nstep int) {
	var maxScale, maxMin float32
	for j := range QK / 32 {
		xs := x[32*j : 32*j+32]
		var sum2 float32
		for _, v := range xs {
			sum2 += v * v
		}
		av := sqrt32(sum2 / 32)
		for l, v := range xs {
			q.weights[l] = av + abs32(v)
		}
		q.scales[j], q.mins[j] = q.makeQKX2(xs, q.weights[:], q.L[32*j:32*j+32], nmax, rmin, 0.1, nstep)
		maxScale, maxMin = max(maxScale, q.scales[j]), max(maxMin, q.mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	sc := out[4:16]
	clear(sc)
	for j := range QK / 32 {
		ls := byte(min(63, uint8(nearestInt(invScale*q.scales[j]))))
		lm := byte(min(63, uint8(nearestInt(invMin*q.mins[j]))))
		if j < 4 {
			sc[j], sc[j+4] = ls, lm
		} else {
			sc[j+4] = ls&15 | (lm&15)<<4
			sc[j-4] |= (ls >> 4) << 6
			sc[j] |= (lm >> 4) << 6
		}
	}
	putF16(out, maxScale/63)
	putF16(out[2:], maxMin/63)
	d, dmin := f16f(out), f16f(out[2:])
	for j := range QK / 32 {
		s, m := scaleMinK4(j, sc)
		dd := d * float32(s)
		if dd == 0 {
			continue
		}
		dm := dmin * float32(m)
		for i := range 32 {
			q.L[32*j+i] = clampInt(nearestInt((x[32*j+i]+dm)/dd), 0, nmax)
		}
	}
}

func (q *quantizer) quantQ4K(out []byte, x []float32) {
	q.quantKScales(out, x, 15, -1, 20)
	qs := out[16:]
	for j := 0; j < QK; j += 64 {
		for l := range 32 {
			qs[j/2+l] = byte(q.L[j+l]) | byte(q.L[j+l+32])<<4
		}
	}
}

func (q *quantizer) quantQ5K(out []byte, x []float32) {
	q.quantKScales(out, x, 31, -0.5, 15)
	qh, qs := out[16:48], out[48:]
	clear(qh)
	m1, m2 := byte(1), byte(2)
	for n := 0; n < QK; n += 64 {
		for j := range 32 {
			l1, l2 := q.L[n+j], q.L[n+j+32]
			if l1 > 15 {
				l1 -= 16
				qh[j] |= m1
			}
			if l2 > 15 {
				l2 -= 16
				qh[j] |= m2
			}
			qs[n/2+j] = byte(l1) | byte(l2)<<4
		}
		m1, m2 = m1<<2, m2<<2
	}
}

// groupMaxEps is ggml's GROUP_MAX_EPS: a group whose largest magnitude is
// below it is all zeros.
const groupMaxEps = 1e-15

// makeQX is ggml's make_qx_quants with rmse_type 1 (weights x²) and no
// importance weights: a symmetric quantization into [-nmax, nmax-1]
// (stored offset by nmax), the scale refined by a least-squares fit over
// 19 candidate inverse scales.
func makeQX(x []float32, L []int, nmax int) float32 {
	var amax, mx float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, mx = a, v
		}
	}
	if amax < groupMaxEps {
		for i := range L[:len(x)] {
			L[i] = 0
		}
		return 0
	}
	fmax := float32(nmax)
	iscale := -fmax / mx
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*v), -nmax, nmax-1)
		L[i] = l + nmax
		w := v * v
		fl := float32(l)
		sumlx += w * v * fl
		suml2 += w * fl * fl
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := scale * sumlx
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fmax + 0.1*float32(is)) / mx
		sumlx, suml2 = 0, 0
		for _, v := range x {
			l := clampInt(nearestInt(iscale*v), -nmax, nmax-1)
			w := v * v
			fl := float32(l)
			sumlx += w * v * fl
			suml2 += w * fl * fl
		}
		if suml2 > 0 && sumlx*sumlx > best*suml2 {
			for i, v := range x {
				L[i] = nmax + clampInt(nearestInt(iscale*v), -nmax, nmax-1)
			}
			scale = sumlx / suml2
			best = scale * sumlx
		}
	}
	return scale
}

func (q *quantizer) quantQ6K(out []byte, x []float32) {
	var maxScale, maxAbs float32
	for ib := range QK / 16 {
		s := makeQX(x[16*ib:16*ib+16], q.L[16*ib:], 32)
		q.scales[ib] = s
		if a := abs32(s); a > maxAbs {
			maxAbs, maxScale = a, s
		}
	}
	ql, qh, sc := out[:128], out[128:192], out[192:208]
	if maxAbs < groupMaxEps {
		clear(out)
		return
	}
	iscale := -128 / maxScale
	putF16(out[208:], 1/iscale)
	for ib := range QK / 16 {
		sc[ib] = byte(int8(min(127, nearestInt(iscale*q.scales[ib]))))
	}
	d := f16f(out[208:])
	for j := range QK / 16 {
		dd := d * float32(int8(sc[j]))
		if dd == 0 {
			continue
		}
		for i := range 16 {
			q.L[16*j+i] = clampInt(nearestInt(x[16*j+i]/dd), -32, 31) + 32
		}
	}
	for n := range 2 {
		L := q.L[128*n:]
		l0, h0 := ql[64*n:], qh[32*n:]
		for l := range 32 {
			q1, q2, q3, q4 := L[l]&15, L[l+32]&15, L[l+64]&15, L[l+96]&15
			l0[l] = byte(q1 | q3<<4)
			l0[l+32] = byte(q2 | q4<<4)
			h0[l] = byte(L[l]>>4 | (L[l+32]>>4)<<2 | (L[l+64]>>4)<<4 | (L[l+96]>>4)<<6)
		}
	}
}
