package refdev

// MatMulW16 is the naive loop: each bf16 weight widened, fp32 products
// summed in order.
func (d *Device) MatMulW16(c, a []float32, b []uint16, m, n, k int, acc bool) {
	C, A, B := d.f32.data(c), d.f32.data(a), d.b16.data(b)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for p := 0; p < k; p++ {
				s += A[i*k+p] * fromBF16(B[j*k+p])
			}
			if acc {
				C[i*n+j] += s
			} else {
				C[i*n+j] = s
			}
		}
	}
}
