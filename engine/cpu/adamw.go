package cpu

import (
	"math"

	"hone/engine"
)

// AdamW as torch.optim.AdamW: p ← p·(1 − lr·wd), then the Adam update with
// bias-corrected moments. Memory-bound: one pass over p, g, m and v.
func (d *Device) AdamW(p, g, m, v []float32, p16 []uint16, s engine.AdamWStep) {
	bc1 := 1 - math.Pow(float64(s.Beta1), float64(s.Step))
	bc2 := 1 - math.Pow(float64(s.Beta2), float64(s.Step))
	stepSize := float32(float64(s.LR) / bc1)
	invSqrtBC2 := float32(1 / math.Sqrt(bc2))
	decay := 1 - s.LR*s.WeightDecay
	b1, b2, c1, c2, eps := s.Beta1, s.Beta2, 1-s.Beta1, 1-s.Beta2, s.Eps
	gs := s.GradScale
	if gs == 0 {
		gs = 1
	}
	d.parallel((len(p)+blocks-1)/blocks, func(lo, hi int) {
		lo, hi = lo*blocks, min(hi*blocks, len(p))
		pp, gg, mm, vv := p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
		gg, mm, vv = gg[:len(pp)], mm[:len(pp)], vv[:len(pp)] // one bounds check, not four per element
		if simd {
			var o16 []uint16
			if p16 != nil {
				o16 = p16[lo:hi][:len(pp)]
			}
			simdAdamW(pp, gg, mm, vv, o16, gs, b1, b2, c1, c2, eps, invSqrtBC2, decay, stepSize)
			return
		}
		for i := range pp {
			gi := gg[i] * gs
			// float32(...) around each product keeps Go from fusing it
			// into an FMA (GOAMD64=v3), which the C kernel does not do.
			mi := float32(b1*mm[i]) + float32(c1*gi)
			vi := float32(b2*vv[i]) + float32(c2*gi*gi)
			mm[i], vv[i] = mi, vi
			denom := float32(float32(math.Sqrt(float64(vi)))*invSqrtBC2) + eps
			pp[i] = float32(pp[i]*decay) - stepSize*mi/denom
		}
		if p16 != nil {
			for i, x := range pp {
				p16[lo+i] = toBF16(x)
			}
		}
	})
}
