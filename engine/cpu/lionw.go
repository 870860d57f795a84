package cpu

import (
	"math"

	"hone/engine"
)

// LionW as composer's DecoupledLionW: p ← p·decay − lr·sign(β1·m + (1−β1)·g),
// then m ← β2·m + (1−β2)·g. Memory-bound: one pass over p, g and m (and
// the bf16 copy p16), in the AVX-512 kernel simdLionW where the CPU has it.
func (d *Device) LionW(p, g, m []float32, p16 []uint16, s engine.LionWStep) {
	b1, c1, b2, c2 := s.Beta1, 1-s.Beta1, s.Beta2, 1-s.Beta2
	decay, gs := s.Decay, s.GradScale
	if gs == 0 {
		gs = 1
	}
	lrBits := math.Float32bits(s.LR) &^ (1 << 31)
	d.parallel((len(p)+blocks-1)/blocks, func(lo, hi int) {
		lo, hi = lo*blocks, min(hi*blocks, len(p))
		pp, gg, mm := p[lo:hi], g[lo:hi], m[lo:hi]
		gg, mm = gg[:len(pp)], mm[:len(pp)] // one bounds check, not three per element
		if simd {
			var o16 []uint16
			if p16 != nil {
				o16 = p16[lo:hi][:len(pp)]
			}
			simdLionW(pp, gg, mm, o16, gs, b1, c1, b2, c2, decay, lrBits)
			return
		}
		// The float32 conversions keep every product rounded on its own
		// (Go fuses a·b + c into an FMA from GOAMD64=v3 on), so this loop
		// and simdLionW, which has no FMA, agree bit for bit on any build.
		for i := range pp {
			gi := gg[i] * gs
			u := math.Float32bits(float32(b1*mm[i]) + float32(c1*gi))
			// lr·sign(c) without a branch (the sign of random data would
			// mispredict half the time): lr with c's sign bit, zeroed when
			// c is ±0, as torch.sign(0) = 0.
			nz := ((u &^ (1 << 31)) + (1<<31 - 1)) >> 31
			pp[i] = float32(pp[i]*decay) - math.Float32frombits((lrBits|u&(1<<31))*nz)
			mm[i] = float32(b2*mm[i]) + float32(c2*gi)
		}
		if p16 != nil {
			for i, x := range pp {
				p16[lo+i] = toBF16(x)
			}
		}
	})
}
