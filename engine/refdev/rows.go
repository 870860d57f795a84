package refdev

import "math"

func (d *Device) GatherRows(out, x []float32, idx []int32, scale []float32, n, dim int) {
	o, X, id, s := d.f32.data(out), d.f32.data(x), d.i32.data(idx), d.f32.data(scale)
	for j := 0; j < n; j++ {
		for i := 0; i < dim; i++ {
			v := X[int(id[j])*dim+i]
			if s != nil {
				v *= s[j]
			}
			o[j*dim+i] = v
		}
	}
}

func (d *Device) ScatterAddRows(x, y []float32, idx []int32, scale []float32, n, dim int) {
	X, Y, id, s := d.f32.data(x), d.f32.data(y), d.i32.data(idx), d.f32.data(scale)
	for j := 0; j < n; j++ {
		for i := 0; i < dim; i++ {
			v := Y[j*dim+i]
			if s != nil {
				v *= s[j]
			}
			X[int(id[j])*dim+i] += v
		}
	}
}

func (d *Device) RowDots(out, x []float32, idx []int32, y []float32, n, dim int) {
	o, X, id, Y := d.f32.data(out), d.f32.data(x), d.i32.data(idx), d.f32.data(y)
	for j := 0; j < n; j++ {
		var s float32
		for i := 0; i < dim; i++ {
			s += X[int(id[j])*dim+i] * Y[j*dim+i]
		}
		o[j] = s
	}
}

func (d *Device) LayerNorm(out []float32, out16 []uint16, rstd, x, w []float32, n, dim int, eps float32) {
	o, o16, r, X, W := d.f32.data(out), d.b16.data(out16), d.f32.data(rstd), d.f32.data(x), d.f32.data(w)
	for i := 0; i < n; i++ {
		row := X[i*dim : (i+1)*dim]
		mu, rs := meanRstd(row, eps)
		r[i] = rs
		for j, v := range row {
			o[i*dim+j] = (v - mu) * rs * W[j]
			if o16 != nil {
				o16[i*dim+j] = toBF16(o[i*dim+j])
			}
		}
	}
}

// meanRstd is a row's mean and 1/sqrt(variance + eps), in float32.
func meanRstd(x []float32, eps float32) (float32, float32) {
	var s float32
	for _, v := range x {
		s += v
	}
	mu := s / float32(len(x))
	var ss float32
	for _, v := range x {
		ss += (v - mu) * (v - mu)
	}
	return mu, 1 / float32(math.Sqrt(float64(ss/float32(len(x))+eps)))
}

func (d *Device) LayerNormBackward(dx, dw, dout, x, w, rstd []float32, n, dim int) {
	DX, DW, DY, X, W, R := d.f32.data(dx), d.f32.data(dw), d.f32.data(dout), d.f32.data(x), d.f32.data(w), d.f32.data(rstd)
	for i := 0; i < n; i++ {
		row, dy := X[i*dim:(i+1)*dim], DY[i*dim:(i+1)*dim]
		var mu float32
		for _, v := range row {
			mu += v
		}
		mu /= float32(dim)
		r := R[i]
		var mg, mgx float32
		for j, v := range row {
			mg += dy[j] * W[j]
			mgx += dy[j] * W[j] * (v - mu) * r
		}
		mg, mgx = mg/float32(dim), mgx/float32(dim)
		for j, v := range row {
			xh := (v - mu) * r
			DX[i*dim+j] += r * (dy[j]*W[j] - mg - xh*mgx)
			DW[j] += dy[j] * xh
		}
	}
}

func (d *Device) Clamp(x []float32, lim float32) {
	X := d.f32.data(x)
	for i, v := range X {
		X[i] = min(max(v, -lim), lim)
	}
}

func (d *Device) ClampBackward(dx, x []float32, lim float32) {
	DX, X := d.f32.data(dx), d.f32.data(x)
	for i, v := range X {
		if v > lim || v < -lim {
			DX[i] = 0
		}
	}
}
