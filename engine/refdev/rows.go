package refdev

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
