package cpu

import "math"

// RMSNorm: out(N,C) = x * rstd * w, rstd(N) = 1/sqrt(mean(x²) + eps).
func (d *Device) RMSNorm(out []float32, out16 []uint16, rstd, x, w []float32, n, dim int, eps float32) {
	d.parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xr, or := x[i*dim:(i+1)*dim], out[i*dim:(i+1)*dim]
			var ss float64
			for _, v := range xr {
				ss += float64(v) * float64(v)
			}
			r := float32(1 / math.Sqrt(ss/float64(dim)+float64(eps)))
			rstd[i] = r
			for j, v := range xr {
				or[j] = v * r * w[j]
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

// RMSNormBackward adds dx += r·(w∘dy) − r³/C · x · Σ(w∘dy∘x) and
// dw += Σ_rows dy∘x·r.
func (d *Device) RMSNormBackward(dx, dw, dout, x, w, rstd []float32, n, dim int) {
	d.parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xr, gr, dr := x[i*dim:(i+1)*dim], dout[i*dim:(i+1)*dim], dx[i*dim:(i+1)*dim]
			var dot float64
			for j, v := range xr {
				dot += float64(gr[j]) * float64(w[j]) * float64(v)
			}
			r := rstd[i]
			k := float32(dot) * r * r * r / float32(dim)
			for j, v := range xr {
				dr[j] += r*w[j]*gr[j] - k*v
			}
		}
	})
	// Split by columns so rows never race on dw.
	d.parallel(dim, func(lo, hi int) {
		for i := 0; i < n; i++ {
			r := rstd[i]
			xr, gr := x[i*dim+lo:i*dim+hi], dout[i*dim+lo:i*dim+hi]
			dwr := dw[lo:hi]
			for j := range dwr {
				dwr[j] += gr[j] * xr[j] * r
			}
		}
	})
}
