package cpu

import "hone/engine"

// LionW as composer's DecoupledLionW: p ← p·decay − lr·sign(β1·m + (1−β1)·g),
// then m ← β2·m + (1−β2)·g. Memory-bound: one pass over p, g and m.
func (d *Device) LionW(p, g, m []float32, p16 []uint16, s engine.LionWStep) {
	b1, c1, b2, c2 := s.Beta1, 1-s.Beta1, s.Beta2, 1-s.Beta2
	lr, decay, gs := s.LR, s.Decay, s.GradScale
	if gs == 0 {
		gs = 1
	}
	d.parallel((len(p)+blocks-1)/blocks, func(lo, hi int) {
		lo, hi = lo*blocks, min(hi*blocks, len(p))
		pp, gg, mm := p[lo:hi], g[lo:hi], m[lo:hi]
		gg, mm = gg[:len(pp)], mm[:len(pp)] // one bounds check, not three per element
		for i := range pp {
			gi := gg[i] * gs
			c := b1*mm[i] + c1*gi
			x := pp[i] * decay
			switch { // sign(0) = 0, as torch.sign
			case c > 0:
				x -= lr
			case c < 0:
				x += lr
			}
			pp[i] = x
			mm[i] = b2*mm[i] + c2*gi
		}
		if p16 != nil {
			for i, x := range pp {
				p16[lo+i] = toBF16(x)
			}
		}
	})
}
