package cpu

import "math"

// RMSNorm: out(N,C) = x * rstd * w, rstd(N) = 1/sqrt(mean(x²) + eps).
func (d *Device) RMSNorm(out []float32, out16 []uint16, rstd, x, w []float32, n, dim int, eps float32) {
	if simd {
		_, _, _ = x[n*dim-1], out[n*dim-1], rstd[n-1]
		if out16 != nil {
			_ = out16[n*dim-1]
		}
		d.parallel(n, func(lo, hi int) { simdRMSNorm(out, out16, rstd, x, w[:dim], lo, hi, dim, eps) })
		return
	}
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
// dw += Σ_rows dy∘x·r, and dx's bf16 cast into dx16 when it is non-nil.
func (d *Device) RMSNormBackward(dx []float32, dx16 []uint16, dw, dout, x, w, rstd []float32, n, dim int) {
	if dx16 != nil {
		_ = dx16[n*dim-1]
	}
	if simd {
		_, _, _, _, _ = dx[n*dim-1], dout[n*dim-1], x[n*dim-1], rstd[n-1], dw[dim-1]
		d.parallel(n, func(lo, hi int) { simdRMSNormDx(dx, dx16, dout, x, w[:dim], rstd, lo, hi, dim) })
		// Columns in whole vectors per thread.
		d.parallel((dim+15)/16, func(lo, hi int) { simdRMSNormDw(dw, dout, x, rstd, n, dim, lo*16, min(hi*16, dim)) })
		return
	}
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
			if dx16 != nil {
				for j, v := range dr {
					dx16[i*dim+j] = toBF16(v)
				}
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
