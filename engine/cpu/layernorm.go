package cpu

import "math"

// LayerNorm without bias (DBRX): out(N,C) = (x − mean) * rstd * w, rstd(N)
// = 1/sqrt(var + eps) with the biased variance, as torch's LayerNorm.
func (d *Device) LayerNorm(out []float32, out16 []uint16, rstd, x, w []float32, n, dim int, eps float32) {
	d.parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xr, or := x[i*dim:(i+1)*dim], out[i*dim:(i+1)*dim]
			mu, r := meanRstd(xr, eps)
			rstd[i] = r
			for j, v := range xr {
				or[j] = (v - mu) * r * w[j]
			}
			if out16 != nil {
				o16 := out16[i*dim : (i+1)*dim]
				for j, v := range or {
					o16[j] = toBF16(v)
				}
			}
		}
	})
}

// meanRstd is a row's mean and 1/sqrt(variance + eps), in float64.
func meanRstd(x []float32, eps float32) (float32, float32) {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	mu := s / float64(len(x))
	var ss float64
	for _, v := range x {
		ss += (float64(v) - mu) * (float64(v) - mu)
	}
	return float32(mu), float32(1 / math.Sqrt(ss/float64(len(x))+float64(eps)))
}

// LayerNormBackward, with x̂ = (x − mean)·rstd (the mean recomputed from
// x) and g = w∘dy: dx += rstd·(g − mean(g) − x̂·mean(g∘x̂)), dw += Σ_rows
// dy∘x̂.
func (d *Device) LayerNormBackward(dx, dw, dout, x, w, rstd []float32, n, dim int) {
	mean := func(xr []float32) float32 {
		var s float64
		for _, v := range xr {
			s += float64(v)
		}
		return float32(s / float64(len(xr)))
	}
	d.parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xr, gr, dr := x[i*dim:(i+1)*dim], dout[i*dim:(i+1)*dim], dx[i*dim:(i+1)*dim]
			mu, r := mean(xr), rstd[i]
			var sg, sgx float64
			for j, v := range xr {
				g := float64(gr[j]) * float64(w[j])
				sg += g
				sgx += g * float64((v-mu)*r)
			}
			mg, mgx := float32(sg/float64(dim)), float32(sgx/float64(dim))
			for j, v := range xr {
				dr[j] += r * (gr[j]*w[j] - mg - (v-mu)*r*mgx)
			}
		}
	})
	d.parallel(dim, func(lo, hi int) {
		for i := 0; i < n; i++ {
			xr := x[i*dim : (i+1)*dim]
			mu, r := mean(xr), rstd[i]
			gr, dwr := dout[i*dim+lo:i*dim+hi], dw[lo:hi]
			for j := range dwr {
				dwr[j] += gr[j] * (xr[lo+j] - mu) * r
			}
		}
	})
}

// Clamp limits x to [−lim, lim] in place (DBRX's clip_qkv).
func (d *Device) Clamp(x []float32, lim float32) {
	d.parallel(len(x), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			x[i] = min(max(x[i], -lim), lim)
		}
	})
}

// ClampBackward zeroes dx where the unclamped x was outside [−lim, lim].
func (d *Device) ClampBackward(dx, x []float32, lim float32) {
	d.parallel(len(dx), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if x[i] > lim || x[i] < -lim {
				dx[i] = 0
			}
		}
	})
}
