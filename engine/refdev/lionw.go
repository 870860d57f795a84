package refdev

import "hone/engine"

// LionW as composer's DecoupledLionW, element by element: decay, then the
// sign of the interpolated moment (torch.sign: 0 at 0), then the moment.
func (d *Device) LionW(p, g, m []float32, p16 []uint16, s engine.LionWStep) {
	P, G, M, P16 := d.f32.data(p), d.f32.data(g), d.f32.data(m), d.b16.data(p16)
	gs := s.GradScale
	if gs == 0 {
		gs = 1
	}
	for i := range P {
		gi := G[i] * gs
		u := s.Beta1*M[i] + (1-s.Beta1)*gi
		sign := float32(0)
		if u > 0 {
			sign = 1
		} else if u < 0 {
			sign = -1
		}
		P[i] = P[i]*s.Decay - s.LR*sign
		M[i] = s.Beta2*M[i] + (1-s.Beta2)*gi
		if P16 != nil {
			P16[i] = toBF16(P[i])
		}
	}
}
