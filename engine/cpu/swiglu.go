package cpu

import "math"

const swigluBlock = 4096

// SwiGLU: h = silu(gate)·up with silu(g) = g·σ(g).
func (d *Device) SwiGLU(h, gate, up []float32, n int) {
	d.parallel((n+swigluBlock-1)/swigluBlock, func(lo, hi int) {
		for i := lo * swigluBlock; i < min(hi*swigluBlock, n); i++ {
			g := gate[i]
			sig := float32(1 / (1 + math.Exp(float64(-g))))
			h[i] = g * sig * up[i]
		}
	})
}

// SwiGLUBackward: dup = dh·silu(g); dgate = dh·up·σ(g)(1 + g(1 − σ(g))).
func (d *Device) SwiGLUBackward(dgate, dup, dh, gate, up []float32, n int) {
	d.parallel((n+swigluBlock-1)/swigluBlock, func(lo, hi int) {
		for i := lo * swigluBlock; i < min(hi*swigluBlock, n); i++ {
			g := gate[i]
			sig := float32(1 / (1 + math.Exp(float64(-g))))
			dup[i] = dh[i] * g * sig
			dgate[i] = dh[i] * up[i] * sig * (1 + g*(1-sig))
		}
	})
}
