package cpu

import "math"

// exp32 is e^x in float32 to about 2 ulp: x = k·ln2 + r with |r| ≤ ln2/2,
// e^r by a degree-6 polynomial, scaled by 2^k through the exponent bits.
// k is rounded with the 1.5·2²³ trick, so there is no float64 or call on
// the path: several times faster than math.Exp, exact enough for softmax.
func exp32(x float32) float32 {
	if x < -87.3 {
		return 0
	}
	if x > 88.7 {
		return float32(math.Inf(1))
	}
	const ln2hi, ln2lo, log2e, round = 0.693359375, -2.12194440e-4, 1.44269504088896341, 12582912
	k := (x*log2e + round) - round
	r := x - k*ln2hi - k*ln2lo
	p := float32(1.0/720)*r + 1.0/120
	p = p*r + 1.0/24
	p = p*r + 1.0/6
	p = p*r + 0.5
	p = p*r + 1
	p = p*r + 1
	return p * math.Float32frombits(uint32(int32(k)+127)<<23)
}
