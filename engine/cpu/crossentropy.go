package cpu

import "math"

// CrossEntropy returns Σ over scored rows of logsumexp(logits) − logits[target]
// and, when dlogits is non-nil, writes scale·(softmax − onehot) (zero rows for
// unscored positions). The sum of exponentials is kept in float64.
func (d *Device) CrossEntropy(dlogits, logits []float32, targets []int32, n, vocab int, scale float32) float64 {
	loss := make([]float64, n)
	d.parallel(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := logits[i*vocab : (i+1)*vocab]
			t := targets[i]
			if t < 0 {
				if dlogits != nil {
					clear(dlogits[i*vocab : (i+1)*vocab])
				}
				continue
			}
			mx := row[0]
			for _, v := range row {
				mx = max(mx, v)
			}
			var sum float64
			for _, v := range row {
				sum += math.Exp(float64(v - mx))
			}
			lse := float64(mx) + math.Log(sum)
			loss[i] = lse - float64(row[t])
			if dlogits != nil {
				out := dlogits[i*vocab : (i+1)*vocab]
				for j, v := range row {
					out[j] = scale * float32(math.Exp(float64(v)-lse))
				}
				out[t] -= scale
			}
		}
	})
	var s float64
	for _, l := range loss {
		s += l
	}
	return s
}
