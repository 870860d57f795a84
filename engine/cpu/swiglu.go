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

// SwiGLUBackward: dup = dh·silu(g); dgate = dh·up·σ(g)(1 + g(1 − σ(g))),
// and their bf16 casts in the same pass when dgate16, dup16 are non-nil.
func (d *Device) SwiGLUBackward(dgate, dup []float32, dgate16, dup16 []uint16, dh, gate, up []float32, n int) {
	if dgate16 != nil {
		_, _ = dgate16[n-1], dup16[n-1]
	}
	d.parallel((n+swigluBlock-1)/swigluBlock, func(lo, hi int) {
		lo, hi = lo*swigluBlock, min(hi*swigluBlock, n)
		var g16, u16 []uint16
		var g32, u32 []float32
		if dgate16 != nil {
			g16, u16 = dgate16[lo:hi], dup16[lo:hi]
		}
		if dgate != nil {
			g32, u32 = dgate[lo:hi], dup[lo:hi]
		}
		if simd {
			simdSwiGLUBackward(g32, u32, g16, u16, dh[lo:hi], gate[lo:hi], up[lo:hi])
			return
		}
		for i := lo; i < hi; i++ {
			g := gate[i]
			sig := 1 / (1 + exp32(-g))
			du := dh[i] * g * sig
			dg := dh[i] * up[i] * sig * (1 + g*(1-sig))
			if g32 != nil {
				g32[i-lo], u32[i-lo] = dg, du
			}
			if g16 != nil {
				g16[i-lo], u16[i-lo] = toBF16(dg), toBF16(du)
			}
		}
	})
}
