package cpu

import (
	"math"

	"hone/engine"
)

// AdamW as torch.optim.AdamW: p ← p − lr·wd·p, then the Adam update with
// bias-corrected moments.
func (d *Device) AdamW(p, g, m, v []float32, s engine.AdamWStep) {
	bc1 := 1 - math.Pow(float64(s.Beta1), float64(s.Step))
	bc2 := 1 - math.Pow(float64(s.Beta2), float64(s.Step))
	stepSize := float32(float64(s.LR) / bc1)
	sqrtBC2 := float32(math.Sqrt(bc2))
	decay := 1 - s.LR*s.WeightDecay
	b1, b2 := s.Beta1, s.Beta2
	d.parallel((len(p)+blocks-1)/blocks, func(lo, hi int) {
		for i := lo * blocks; i < min(hi*blocks, len(p)); i++ {
			gi := g[i]
			mi := b1*m[i] + (1-b1)*gi
			vi := b2*v[i] + (1-b2)*gi*gi
			m[i], v[i] = mi, vi
			denom := float32(math.Sqrt(float64(vi)))/sqrtBC2 + s.Eps
			p[i] = p[i]*decay - stepSize*mi/denom
		}
	})
}
