package cpu

// RoPE rotates each head of x(N,heads,hd) in the HF rotate_half layout:
// x1' = x1·cos − x2·sin, x2' = x2·cos + x1·sin, with x1, x2 the two halves.
func (d *Device) RoPE(x []float32, pos []int32, cos, sin []float32, n, heads, hd int) {
	d.rope(x, pos, cos, sin, n, heads, hd, 1)
}

// RoPEBackward applies the transpose (inverse) rotation: sin → −sin.
func (d *Device) RoPEBackward(dx []float32, pos []int32, cos, sin []float32, n, heads, hd int) {
	d.rope(dx, pos, cos, sin, n, heads, hd, -1)
}

func (d *Device) rope(x []float32, pos []int32, cos, sin []float32, n, heads, hd int, sign float32) {
	half := hd / 2
	if simd && n > 0 && heads > 0 && half > 0 {
		_, _ = x[n*heads*hd-1], pos[n-1]
		for _, p := range pos[:n] {
			_, _ = cos[(int(p)+1)*half-1], sin[(int(p)+1)*half-1]
		}
		d.parallel(n, func(lo, hi int) { simdRoPE(x, pos, cos, sin, lo, hi, heads, hd, sign) })
		return
	}
	d.parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			p := int(pos[i])
			c, s := cos[p*half:(p+1)*half], sin[p*half:(p+1)*half]
			for h := 0; h < heads; h++ {
				v := x[(i*heads+h)*hd : (i*heads+h+1)*hd]
				x1, x2 := v[:half], v[half:]
				for j := range half {
					a, b, sj := x1[j], x2[j], sign*s[j]
					x1[j] = a*c[j] - b*sj
					x2[j] = b*c[j] + a*sj
				}
			}
		}
	})
}
