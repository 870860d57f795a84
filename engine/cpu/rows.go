package cpu

// Row gathers and scatters of the mixture-of-experts layers: the tokens
// routed to each expert are gathered into consecutive rows, and the expert
// outputs, weighted, are added back into the tokens' rows.

func (d *Device) GatherRows(out, x []float32, idx []int32, scale []float32, n, dim int) {
	d.parallel(n, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			src, dst := x[int(idx[j])*dim:][:dim], out[j*dim:][:dim]
			if scale == nil {
				copy(dst, src)
				continue
			}
			s := scale[j]
			for i, v := range src {
				dst[i] = s * v
			}
		}
	})
}

// ScatterAddRows splits by columns so rows sharing an index never race.
func (d *Device) ScatterAddRows(x, y []float32, idx []int32, scale []float32, n, dim int) {
	d.parallel(dim, func(lo, hi int) {
		for j := 0; j < n; j++ {
			dst, src := x[int(idx[j])*dim+lo:int(idx[j])*dim+hi], y[j*dim+lo:j*dim+hi]
			s := float32(1)
			if scale != nil {
				s = scale[j]
			}
			for i, v := range src {
				dst[i] += s * v
			}
		}
	})
}

func (d *Device) RowDots(out, x []float32, idx []int32, y []float32, n, dim int) {
	d.parallel(n, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			a, b := x[int(idx[j])*dim:][:dim], y[j*dim:][:dim]
			var s float32
			for i, v := range a {
				s += v * b[i]
			}
			out[j] = s
		}
	})
}
