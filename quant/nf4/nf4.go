// Package nf4 is the 4-bit NormalFloat format of QLoRA as bitsandbytes
// defines it: a tensor is cut into blocks of 64 values, each block is
// scaled by its largest magnitude (absmax) into [-1, 1], and each scaled
// value is stored as the index (4 bits, two to a byte, the first value in
// the high nibble) of the nearest of 16 code values. With double
// quantization the per-block absmax scales are themselves stored in 8 bits:
// their mean is subtracted (an fp32 offset) and the rest quantized in
// blocks of 256 with bitsandbytes' signed dynamic 8-bit code, each with its
// own fp32 absmax.
//
// Tensors are immutable once quantized, so every method is safe for
// concurrent use.
package nf4

import (
	"fmt"
	"math"
	"sort"

	"hone/safetensors"
)

const (
	// BlockSize is how many values share one absmax scale.
	BlockSize = 64
	// ScaleBlockSize is how many absmax scales share one second-level
	// scale under double quantization.
	ScaleBlockSize = 256
)

// Code is the NF4 code table: the 16 values of bitsandbytes' NF4 type,
// quantiles of a standard normal rescaled to [-1, 1] with an exact zero
// (create_normal_map with offset 0.9677083). Index i is the 4-bit value i.
var Code = [16]float32{
	-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
}

// thresholds are the midpoints between consecutive code values: a scaled
// value above thresholds[i] is nearer Code[i+1] than Code[i].
var thresholds = func() (t [15]float32) {
	for i := range t {
		t[i] = (Code[i] + Code[i+1]) / 2
	}
	return t
}()

// Index is the 4-bit index of the code value nearest x (x in [-1, 1]);
// a value exactly between two codes goes to the lower one, as bitsandbytes'
// decision tree (dQuantizeNF4) compares with >.
func Index(x float32) uint8 {
	// A table over a fine grid of [-1, 1] answers for every cell that no
	// threshold comes near; the few others search. Quantizing a model
	// calls this for every weight, and the search's branches mispredict.
	b := int((x + 1) * (indexCells / 2))
	if b >= 0 && b < indexCells {
		if i := indexTable[b]; i >= 0 {
			return uint8(i)
		}
	}
	return indexSearch(x)
}

// indexSearch is Index by binary search of the 15 thresholds.
func indexSearch(x float32) uint8 {
	var i uint8
	for step := uint8(8); step > 0; step >>= 1 {
		if x > thresholds[i+step-1] {
			i += step
		}
	}
	return i
}

const indexCells = 8192

// indexTable[b] is the index of every x in cell b, [b/4096-1, (b+1)/4096-1),
// or -1 where a threshold lies in the cell or within a rounding error of it.
var indexTable = func() (t [indexCells]int8) {
	const eps = 1e-5
	for b := range t {
		lo, hi := float64(b)/(indexCells/2)-1, float64(b+1)/(indexCells/2)-1
		t[b] = int8(indexSearch(float32((lo + hi) / 2)))
		for _, th := range thresholds {
			if float64(th) >= lo-eps && float64(th) <= hi+eps {
				t[b] = -1
			}
		}
	}
	return t
}()

// DynamicCode is bitsandbytes' signed dynamic 8-bit code
// (create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)),
// sorted ascending: for each exponent e in 0..6, the 2^e midpoints of
// linspace(0.1, 1, 2^e+1) times 10^(e-6), with both signs, then 0 and 1.
// It quantizes the absmax scales under double quantization.
var DynamicCode = func() [256]float32 {
	var data []float32
	for e := 0; e < 7; e++ {
		n := 1<<e + 1 // boundaries
		scale := float32(math.Pow(10, float64(e-6)))
		for i := 0; i < n-1; i++ {
			lo := 0.1 + float32(i)*(0.9/float32(n-1))
			hi := 0.1 + float32(i+1)*(0.9/float32(n-1))
			mean := (lo + hi) / 2
			data = append(data, scale*mean, -scale*mean)
		}
	}
	data = append(data, 0, 1)
	sort.Slice(data, func(i, j int) bool { return data[i] < data[j] })
	var c [256]float32
	copy(c[:], data)
	return c
}()

// dynIndex is the index of the DynamicCode value nearest x (x in [-1, 1]).
func dynIndex(x float32) uint8 {
	i := sort.Search(256, func(i int) bool { return DynamicCode[i] >= x })
	switch {
	case i == 0:
		return 0
	case i == 256:
		return 255
	case x-DynamicCode[i-1] < DynamicCode[i]-x:
		return uint8(i - 1)
	}
	return uint8(i)
}

// Tensor is one quantized tensor of N values.
type Tensor struct {
	N      int
	Packed []byte // (N+1)/2: value 2k in the high nibble of byte k, 2k+1 in the low
	// Absmax is the scale of each block of 64 (nil under double
	// quantization, which keeps QAbsmax, Absmax2 and Offset instead).
	Absmax []float32
	// Double quantization: scale b is DynamicCode[QAbsmax[b]] *
	// Absmax2[b/256] + Offset.
	QAbsmax []uint8
	Absmax2 []float32
	Offset  float32
}

// Blocks is the number of 64-value blocks of n values.
func Blocks(n int) int { return (n + BlockSize - 1) / BlockSize }

// Quantize quantizes src. With double it also quantizes the absmax scales
// (QLoRA's double quantization).
func Quantize(src []float32, double bool) *Tensor {
	nb := Blocks(len(src))
	t := &Tensor{N: len(src), Packed: make([]byte, (len(src)+1)/2)}
	absmax := make([]float32, nb)
	for b := range absmax {
		block := src[b*BlockSize : min((b+1)*BlockSize, len(src))]
		var m float32
		for _, v := range block {
			m = max(m, math.Float32frombits(math.Float32bits(v)&0x7fffffff))
		}
		absmax[b] = m
		inv := float32(0)
		if m > 0 {
			inv = 1 / m
		}
		for j, v := range block {
			q := Index(v * inv)
			k := b*BlockSize + j
			if k%2 == 0 {
				t.Packed[k/2] |= q << 4
			} else {
				t.Packed[k/2] |= q
			}
		}
	}
	if !double {
		t.Absmax = absmax
		return t
	}
	var sum float64
	for _, m := range absmax {
		sum += float64(m)
	}
	t.Offset = float32(sum / float64(nb))
	ns := (nb + ScaleBlockSize - 1) / ScaleBlockSize
	t.QAbsmax, t.Absmax2 = make([]uint8, nb), make([]float32, ns)
	for s := range t.Absmax2 {
		block := absmax[s*ScaleBlockSize : min((s+1)*ScaleBlockSize, nb)]
		var m float32
		for _, v := range block {
			m = max(m, float32(math.Abs(float64(v-t.Offset))))
		}
		t.Absmax2[s] = m
		inv := float32(0)
		if m > 0 {
			inv = 1 / m
		}
		for j, v := range block {
			t.QAbsmax[s*ScaleBlockSize+j] = dynIndex((v - t.Offset) * inv)
		}
	}
	return t
}

// Scale is the absmax that dequantization multiplies block b's codes by.
func (t *Tensor) Scale(b int) float32 {
	if t.Absmax != nil {
		return t.Absmax[b]
	}
	return DynamicCode[t.QAbsmax[b]]*t.Absmax2[b/ScaleBlockSize] + t.Offset
}

// Scales writes the scales of blocks b0, b0+1, ... into dst.
func (t *Tensor) Scales(dst []float32, b0 int) {
	if t.Absmax != nil {
		copy(dst, t.Absmax[b0:b0+len(dst)])
		return
	}
	for i := range dst {
		b := b0 + i
		dst[i] = DynamicCode[t.QAbsmax[b]]*t.Absmax2[b/ScaleBlockSize] + t.Offset
	}
}

// Bytes is the tensor's storage: half a byte a value and the scales.
func (t *Tensor) Bytes() int64 {
	return int64(len(t.Packed)) + 4*int64(len(t.Absmax)) + int64(len(t.QAbsmax)) + 4*int64(len(t.Absmax2)) + 4
}

// StorageBytes is Bytes for a tensor of n values, without quantizing one.
func StorageBytes(n int64, double bool) int64 {
	nb := (n + BlockSize - 1) / BlockSize
	if !double {
		return (n+1)/2 + 4*nb + 4
	}
	return (n+1)/2 + nb + 4*((nb+ScaleBlockSize-1)/ScaleBlockSize) + 4
}

func (t *Tensor) check(lo, n int) {
	if lo%BlockSize != 0 || lo < 0 || lo+n > t.N {
		panic(fmt.Sprintf("nf4: dequantize [%d, %d) of %d values: the start must be a multiple of %d", lo, lo+n, t.N, BlockSize))
	}
}

// Dequantize writes values [lo, lo+len(dst)) into dst: Code[index] times
// its block's scale, in fp32. lo must be a multiple of BlockSize.
func (t *Tensor) Dequantize(dst []float32, lo int) {
	t.check(lo, len(dst))
	var lut [16]float32 // the block's code values times its scale
	for b0 := 0; b0 < len(dst); b0 += BlockSize {
		s := t.Scale((lo + b0) / BlockSize)
		for i, c := range Code {
			lut[i] = c * s
		}
		block := dst[b0:min(b0+BlockSize, len(dst))]
		packed := t.Packed[(lo+b0)/2 : (lo+b0)/2+(len(block)+1)/2]
		for j, b := range packed[:len(block)/2] {
			block[2*j], block[2*j+1] = lut[b>>4], lut[b&15]
		}
		if len(block)%2 == 1 {
			block[len(block)-1] = lut[packed[len(block)/2]>>4]
		}
	}
}

// DequantizeBF16 is Dequantize rounded to bf16 (nearest even): the
// operand of a bf16 matrix product.
func (t *Tensor) DequantizeBF16(dst []uint16, lo int) {
	t.check(lo, len(dst))
	var lut [16]uint16
	for b0 := 0; b0 < len(dst); b0 += BlockSize {
		s := t.Scale((lo + b0) / BlockSize)
		for i, c := range Code {
			lut[i] = safetensors.Float32ToBF16(c * s)
		}
		block := dst[b0:min(b0+BlockSize, len(dst))]
		packed := t.Packed[(lo+b0)/2 : (lo+b0)/2+(len(block)+1)/2]
		for j, b := range packed[:len(block)/2] {
			block[2*j], block[2*j+1] = lut[b>>4], lut[b&15]
		}
		if len(block)%2 == 1 {
			block[len(block)-1] = lut[packed[len(block)/2]>>4]
		}
	}
}

// Dot is Σ_k W[lo+k]·x[k] for the tensor's values W (code value times
// its block's scale) from lo on: one dot product of a matrix row held in
// NF4 with fp32 x, the values never written out. lo need not start a
// block. Each block's codes are summed against x first and the sum
// multiplied by its scale once: a portable reference for faster kernels.
func (t *Tensor) Dot(x []float32, lo int) float32 {
	if lo < 0 || lo+len(x) > t.N {
		panic(fmt.Sprintf("nf4: dot of values [%d, %d) of %d", lo, lo+len(x), t.N))
	}
	var sum float32
	for k := 0; k < len(x); {
		b := (lo + k) / BlockSize
		end := min(len(x), (b+1)*BlockSize-lo)
		var s float32
		j := k
		if (lo+j)%2 == 1 { // a low nibble first
			s += Code[t.Packed[(lo+j)/2]&15] * x[j]
			j++
		}
		for ; j+1 < end; j += 2 {
			p := t.Packed[(lo+j)/2]
			s += Code[p>>4]*x[j] + Code[p&15]*x[j+1]
		}
		if j < end {
			s += Code[t.Packed[(lo+j)/2]>>4] * x[j]
		}
		sum += t.Scale(b) * s
		k = end
	}
	return sum
}
