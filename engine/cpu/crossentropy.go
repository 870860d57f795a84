package cpu

import "math"

// CrossEntropy returns Σ over scored rows of logsumexp(logits) − logits[target]
// and, when dlogits is non-nil, writes scale·(softmax − onehot) (zero rows for
// unscored positions). The sum of exponentials is kept in float64. With
// dlogits16 the gradient goes there in bf16 instead, computed as the fp32
// one and rounded, and dlogits holds the row's exponentials.
func (d *Device) CrossEntropy(dlogits []float32, dlogits16 []uint16, logits []float32, targets []int32, n, vocab int, scale float32) (float64, int) {
	if dlogits16 != nil && dlogits == nil {
		panic("cpu: CrossEntropy with a bf16 gradient needs dlogits as scratch")
	}
	loss := make([]float64, n)
	hit := make([]bool, n)
	d.parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := logits[i*vocab : (i+1)*vocab]
			t := targets[i]
			if t < 0 {
				if dlogits16 != nil {
					clear(dlogits16[i*vocab : (i+1)*vocab])
				} else if dlogits != nil {
					clear(dlogits[i*vocab : (i+1)*vocab])
				}
				continue
			}
			var out16 []uint16
			if dlogits16 != nil {
				out16 = dlogits16[i*vocab : (i+1)*vocab][:len(row)]
			}
			if simd {
				var out []float32
				if dlogits != nil {
					out = dlogits[i*vocab : (i+1)*vocab][:len(row)]
				}
				_ = row[t]
				var a int
				loss[i], a = simdXentRow(out, out16, row, int(t), scale)
				hit[i] = a == int(t)
				continue
			}
			mx, arg := row[0], 0
			for j, v := range row {
				if v > mx {
					mx, arg = v, j
				}
			}
			hit[i] = arg == int(t)
			// Partial sums in float32 over short runs, accumulated in
			// float64: exact enough for 128k vocabularies, and fast. With
			// a gradient to write, the exponentials are stored in it so
			// each is computed once.
			lt := row[t]
			var out []float32
			if dlogits != nil {
				out = dlogits[i*vocab : (i+1)*vocab][:len(row)]
			}
			var sum float64
			for j := 0; j < len(row); j += 64 {
				var part float32
				for k, v := range row[j:min(j+64, len(row))] {
					e := exp32(v - mx)
					if out != nil {
						out[j+k] = e
					}
					part += e
				}
				sum += float64(part)
			}
			lse := float64(mx) + math.Log(sum)
			loss[i] = lse - float64(lt)
			switch f := scale / float32(sum); {
			case out16 != nil:
				for j, e := range out {
					out16[j] = toBF16(e * f)
				}
				out16[t] = toBF16(out[t]*f - scale)
			case out != nil:
				for j := range out {
					out[j] *= f
				}
				out[t] -= scale
			}
		}
	})
	var s float64
	correct := 0
	for i, l := range loss {
		s += l
		if hit[i] {
			correct++
		}
	}
	return s, correct
}
