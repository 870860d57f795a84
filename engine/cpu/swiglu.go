package cpu

const swigluBlock = 4096

// SwiGLU: h = silu(gate)·up with silu(g) = g·σ(g).
func (d *Device) SwiGLU(h []float32, h16 []uint16, gate, up []float32, n int) {
	d.parallel((n+swigluBlock-1)/swigluBlock, func(lo, hi int) {
		lo, hi = lo*swigluBlock, min(hi*swigluBlock, n)
		hh, gg, uu := h[lo:hi], gate[lo:hi], up[lo:hi]
		gg, uu = gg[:len(hh)], uu[:len(hh)]
		if simd {
			var o []uint16
			if h16 != nil {
				o = h16[lo:hi][:len(hh)]
			}
			simdSwiGLU(hh, o, gg, uu)
			return
		}
		for i, g := range gg {
			hh[i] = g / (1 + exp32(-g)) * uu[i]
		}
		if h16 != nil {
			o := h16[lo:hi]
			for i, v := range hh {
				o[i] = toBF16(v)
			}
		}
	})
}

// SwiGLUBackward: dup = dh·silu(g); dgate = dh·up·σ(g)(1 + g(1 − σ(g))).
func (d *Device) SwiGLUBackward(dgate, dup, dh, gate, up []float32, n int) {
	d.parallel((n+swigluBlock-1)/swigluBlock, func(lo, hi int) {
		if simd {
			lo, hi = lo*swigluBlock, min(hi*swigluBlock, n)
			simdSwiGLUBackward(dgate[lo:hi], dup[lo:hi], dh[lo:hi], gate[lo:hi], up[lo:hi])
			return
		}
		for i := lo * swigluBlock; i < min(hi*swigluBlock, n); i++ {
			g := gate[i]
			sig := 1 / (1 + exp32(-g))
			dup[i] = dh[i] * g * sig
			dgate[i] = dh[i] * up[i] * sig * (1 + g*(1-sig))
		}
	})
}
