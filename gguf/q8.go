package gguf

import (
	"os"
	"sync"
)

// Integer dot products, as ggml computes them on the CPU: the activation
// row is quantized once per product to 8-bit blocks (Q8_K for the k-quant
// weights, Q8_0 for Q8_0 weights), and each weight block's integers are
// multiplied with the activation's integers exactly, the block scales
// applied to the integer sums in fp32. This file holds the activation
// quantizers and the portable reference of that integer math; the kernels
// that do it with AVX-512 VNNI or AVX2 are in qdot_amd64.go.

// q8Row is n activation rows quantized for one weight type: qs the int8
// values (n·cols), d each block's scale (32-element blocks for Q8_0,
// 256-element super-blocks for the k-quants), and for the k-quants bs each
// 16-element group's sum of qs (what the weights' mins and Q6_K's offset
// multiply).
type q8Row struct {
	qs []int8
	d  []float32
	bs []int16
}

var q8Pool = sync.Pool{New: func() any { return new(q8Row) }}

// quantizeQ8K quantizes x (a multiple of 256 long) as ggml's
// quantize_row_q8_K_ref does: per super-block the element of largest
// magnitude maps to -127 (the scale's sign is the element's), values
// rounded to nearest even and clipped at 127, d = 1/iscale.
func quantizeQ8K(qs []int8, d []float32, bs []int16, x []float32) {
	for b := 0; b < len(x)/QK; b++ {
		xb, q := x[b*QK:(b+1)*QK], qs[b*QK:(b+1)*QK]
		var amax, mx float32
		for _, v := range xb {
			if a := abs32(v); a > amax {
				amax, mx = a, v
			}
		}
		if amax == 0 {
			d[b] = 0
			clear(q)
			clear(bs[b*16 : (b+1)*16])
			continue
		}
		iscale := -127 / mx
		for j, v := range xb {
			q[j] = int8(min(127, nearestInt(iscale*v)))
		}
		for g := range 16 {
			var s int16
			for _, v := range q[16*g : 16*g+16] {
				s += int16(v)
			}
			bs[b*16+g] = s
		}
		d[b] = 1 / iscale
	}
}

// quantizeQ8_0 quantizes x (a multiple of 32 long) as ggml's Q8_0
// activations: d = absmax/127 kept at fp16 precision (the block stores it
// as fp16), values x/d (with the unrounded d) rounded to nearest even.
func quantizeQ8_0(qs []int8, d []float32, x []float32) {
	for b := 0; b < len(x)/32; b++ {
		xb := x[b*32 : (b+1)*32]
		var amax float32
		for _, v := range xb {
			amax = max(amax, abs32(v))
		}
		dd := amax / 127
		var id float32
		if dd != 0 {
			id = 1 / dd
		}
		for j, v := range xb {
			qs[b*32+j] = int8(nearestInt(v * id))
		}
		d[b] = roundF16(dd)
	}
}

// quantizeActs quantizes the n rows of x (cols each) for a product with a
// matrix of type t, into a pooled q8Row (put it back when done).
func quantizeActs(t TensorType, x []float32, n, cols int) *q8Row {
	a := q8Pool.Get().(*q8Row)
	a.qs = grow(a.qs, n*cols)
	if t == Q8_0 {
		a.d = grow(a.d, n*cols/32)
		if !quantizeQ8_0C(a.qs, a.d, x[:n*cols]) {
			quantizeQ8_0(a.qs, a.d, x[:n*cols])
		}
		return a
	}
	a.d = grow(a.d, n*cols/QK)
	a.bs = grow(a.bs, n*cols/16)
	if !quantizeQ8KC(a.qs, a.d, a.bs, x[:n*cols]) {
		quantizeQ8K(a.qs, a.d, a.bs, x[:n*cols])
	}
	return a
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// intDots says whether the integer dot products serve type t.
func intDots(t TensorType) bool {
	return dotKernel >= kernInt8Go && (t == Q8_0 || t == Q4_K || t == Q6_K || t == Q5_K)
}

// The kernels MatVec may use, in order of preference.
const (
	kernGo       = iota // dequantize a row to fp32, dot in Go
	kernAVX512          // dequantize-and-dot on fp32 activations, AVX-512
	kernInt8Go          // the integer dot products in Go (tests' reference)
	kernInt8AVX2        // integer dot products, AVX2 (maddubs)
	kernInt8VNNI        // integer dot products, AVX-512 VNNI (dpbusd)
)

var kernelNames = map[int]string{kernGo: "go", kernAVX512: "avx512", kernInt8Go: "int8-go",
	kernInt8AVX2: "int8-avx2", kernInt8VNNI: "int8-avx512vnni"}

// dotKernel is the best the CPU runs; HONE_CPU_KERNELS=go keeps the
// portable fp32 path, and HONE_QUANT_KERNELS names one (as SetDotKernels
// does, "avx512" the fp32-activation kernels) to compare against.
var dotKernel = func() int {
	if name := os.Getenv("HONE_QUANT_KERNELS"); name != "" {
		for k, n := range kernelNames {
			if n == name && kernelOK(k) {
				return k
			}
		}
	}
	switch {
	case os.Getenv("HONE_CPU_KERNELS") == "go":
		return kernGo
	case useVNNI:
		return kernInt8VNNI
	case useAVX2:
		return kernInt8AVX2
	case useAVX512:
		return kernAVX512
	}
	return kernGo
}()

// SetDotKernels makes MatVec use the named kernels ("go", "avx512",
// "int8-go", "int8-avx2", "int8-avx512vnni"; DotKernels names the
// default) and returns the previous choice. It is false when the CPU lacks
// them. For tests and benchmarks; not safe while a MatVec runs.
func SetDotKernels(name string) (prev string, ok bool) {
	prev = kernelNames[dotKernel]
	for k, n := range kernelNames {
		if n == name && kernelOK(k) {
			dotKernel, ok = k, true
		}
	}
	return prev, ok
}

// kernelOK says whether the CPU runs kernels k.
func kernelOK(k int) bool {
	switch k {
	case kernAVX512:
		return useAVX512
	case kernInt8AVX2:
		return useAVX2
	case kernInt8VNNI:
		return useVNNI
	}
	return true
}

// intDotRowsGo is the reference of the integer kernels: y[r*yRows+o]
// (+)= row o of W · activation row r for o0 <= o < o1, each block's
// integer sums exact and the scales applied in fp32 in the kernels' order
// of blocks (the SIMD kernels sum lanes in another order: their results
// differ from these by fp32 rounding only).
func (m *Matrix) intDotRowsGo(y []float32, a *q8Row, n, o0, o1 int, acc bool) {
	cols := m.Cols
	for o := o0; o < o1; o++ {
		w := m.Data[o*m.rowBytes : (o+1)*m.rowBytes]
		for r := 0; r < n; r++ {
			var s float32
			switch m.Type {
			case Q8_0:
				s = dotQ8_0Q8_0(w, a.qs[r*cols:(r+1)*cols], a.d[r*cols/32:])
			default:
				s = dotKQ8K(m.Type, w, a.qs[r*cols:(r+1)*cols], a.d[r*cols/QK:], a.bs[r*cols/16:])
			}
			if acc {
				y[r*m.Rows+o] += s
			} else {
				y[r*m.Rows+o] = s
			}
		}
	}
}

func dotQ8_0Q8_0(w []byte, q []int8, d []float32) float32 {
	var s float32
	for b := 0; b < len(q)/32; b++ {
		blk := w[34*b : 34*b+34]
		var sum int32
		for j := range 32 {
			sum += int32(int8(blk[2+j])) * int32(q[32*b+j])
		}
		s += f16f(blk) * d[b] * float32(sum)
	}
	return s
}

// kBlockInts is one super-block's integer sums against Q8_K activations:
// sumi = Σ_g scale_g · Σ_{i in g} q_i·x_i and, for Q4_K/Q5_K, summ =
// Σ_g min_g · Σ_{i in g} x_i (from the activation's 16-sums), so that the
// block's product is d·dx·sumi - dmin·dx·summ (Q6_K: d·dx·sumi, its -32
// offset folded into sumi through the 16-sums).
func kBlockInts(t TensorType, blk []byte, q []int8, bs []int16) (sumi, summ int32) {
	switch t {
	case Q4_K, Q5_K:
		scales := blk[4:16]
		var qh, qs []byte
		if t == Q5_K {
			qh, qs = blk[16:48], blk[48:176]
		} else {
			qs = blk[16:144]
		}
		for j := range 4 {
			sc1, m1 := scaleMinK4(2*j, scales)
			sc2, m2 := scaleMinK4(2*j+1, scales)
			var lo, hi int32
			for l := range 32 {
				a, b := int32(qs[32*j+l]&15), int32(qs[32*j+l]>>4)
				if qh != nil {
					a |= int32(qh[l]>>(2*j)&1) << 4
					b |= int32(qh[l]>>(2*j+1)&1) << 4
				}
				lo += a * int32(q[64*j+l])
				hi += b * int32(q[64*j+32+l])
			}
			sumi += int32(sc1)*lo + int32(sc2)*hi
			summ += int32(m1)*(int32(bs[4*j])+int32(bs[4*j+1])) + int32(m2)*(int32(bs[4*j+2])+int32(bs[4*j+3]))
		}
	case Q6_K:
		ql, qh, sc := blk[:128], blk[128:192], blk[192:208]
		var g [16]int32 // each 16-group's Σ q6·x, q6 in 0..63
		for n := range 2 {
			for l := range 32 {
				q1 := int32(ql[64*n+l]&15 | (qh[32*n+l]>>0&3)<<4)
				q2 := int32(ql[64*n+32+l]&15 | (qh[32*n+l]>>2&3)<<4)
				q3 := int32(ql[64*n+l]>>4 | (qh[32*n+l]>>4&3)<<4)
				q4 := int32(ql[64*n+32+l]>>4 | (qh[32*n+l]>>6&3)<<4)
				e := 128 * n
				g[(e+l)/16] += q1 * int32(q[e+l])
				g[(e+32+l)/16] += q2 * int32(q[e+32+l])
				g[(e+64+l)/16] += q3 * int32(q[e+64+l])
				g[(e+96+l)/16] += q4 * int32(q[e+96+l])
			}
		}
		for k := range 16 {
			sumi += int32(int8(sc[k])) * (g[k] - 32*int32(bs[k]))
		}
	}
	return sumi, summ
}

func dotKQ8K(t TensorType, w []byte, q []int8, d []float32, bs []int16) float32 {
	bb := t.BlockBytes()
	var s float32
	for b := 0; b < len(q)/QK; b++ {
		blk := w[bb*b : bb*(b+1)]
		sumi, summ := kBlockInts(t, blk, q[QK*b:QK*(b+1)], bs[16*b:16*(b+1)])
		if t == Q6_K {
			s += f16f(blk[208:]) * d[b] * float32(sumi)
		} else {
			s += f16f(blk)*d[b]*float32(sumi) - f16f(blk[2:])*d[b]*float32(summ)
		}
	}
	return s
}
