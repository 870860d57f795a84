package safetensors

import (
	"encoding/binary"
	"math"
	"runtime"
	"sync"
)

// BF16ToFloat32 widens a bfloat16 bit pattern; bf16 is the top half of an
// IEEE float32, so this is exact.
func BF16ToFloat32(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// Float32ToBF16 narrows f to bfloat16 with round-to-nearest-even. NaNs stay
// NaN (quieted, sign kept) rather than being rounded into infinity.
func Float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x0040
	}
	// Adding 0x7fff plus the lsb of the kept half rounds ties to even; a carry
	// out of the mantissa correctly bumps the exponent (up to infinity).
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F16ToFloat32 widens an IEEE half-precision bit pattern (exact).
func F16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // inf or NaN; keep the payload
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal half: renormalise into a float32 normal.
	e := uint32(127 - 15 + 1)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}

// Float32ToF16 narrows f to IEEE half precision with round-to-nearest-even,
// producing subnormals, ±0 on underflow, ±inf on overflow, and quiet NaN.
func Float32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Below half the smallest subnormal (2^-25) everything rounds to 0;
		// float32 subnormals land here too.
		if e < -10 {
			return sign
		}
		m := mant | 0x800000
		shift := uint32(14 - e)
		r := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++ // may carry into the smallest normal, which is correct
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // carry may reach 0x7c00 = inf, which is the right answer
	}
	return sign | uint16(r)
}

// parallelThreshold is the element count above which conversions fan out
// across goroutines; below it the goroutine overhead outweighs the gain.
const parallelThreshold = 1 << 20

// parallelFor runs fn over [0,n) in contiguous chunks, concurrently when n is
// large enough to be worth it.
func parallelFor(n int, fn func(lo, hi int)) {
	workers := runtime.GOMAXPROCS(0)
	if n < parallelThreshold || workers < 2 {
		fn(0, n)
		return
	}
	chunk := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// decode converts little-endian src of dtype dt into dst. The caller has
// checked that len(src) == len(dst)*dt.Size() and that dt is convertible.
func decode(dst []float32, src []byte, dt DType) {
	le := binary.LittleEndian
	switch dt {
	case F32:
		parallelFor(len(dst), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				dst[i] = math.Float32frombits(le.Uint32(src[4*i:]))
			}
		})
	case BF16:
		parallelFor(len(dst), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				dst[i] = math.Float32frombits(uint32(le.Uint16(src[2*i:])) << 16)
			}
		})
	case F16:
		parallelFor(len(dst), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				dst[i] = F16ToFloat32(le.Uint16(src[2*i:]))
			}
		})
	}
}

// encode converts src into little-endian dtype dt in dst, which must hold
// len(src)*dt.Size() bytes.
func encode(dst []byte, src []float32, dt DType) {
	le := binary.LittleEndian
	switch dt {
	case F32:
		parallelFor(len(src), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				le.PutUint32(dst[4*i:], math.Float32bits(src[i]))
			}
		})
	case BF16:
		parallelFor(len(src), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				le.PutUint16(dst[2*i:], Float32ToBF16(src[i]))
			}
		})
	case F16:
		parallelFor(len(src), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				le.PutUint16(dst[2*i:], Float32ToF16(src[i]))
			}
		})
	}
}
