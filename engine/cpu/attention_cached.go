package cpu

import "math"

func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy: y += a·x.
func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

// AttentionCached attends nq queries at positions start.. over the cache's
// first start+nq keys: prompt chunks on the blocked kernel
// (attention_prefill.go), single tokens on the streaming AVX-512 kernel
// where the CPU has it, else the Go loop below, which is also their
// reference.
func (d *Device) AttentionCached(out, q, kc, vc []float32, start, nq, nh, nkv, hd, window int) {
	if nq == 0 {
		return
	}
	if prefillSIMD && nq >= prefillMinRows {
		d.attentionPrefill(out, q, kc, vc, start, nq, nh, nkv, hd, window)
		return
	}
	if cachedSIMD {
		d.attentionCachedSIMD(out, q, kc, vc, start, nq, nh, nkv, hd, window)
		return
	}
	d.attentionCachedGo(out, q, kc, vc, start, nq, nh, nkv, hd, window)
}

// attentionCachedGo handles the queries with plain loops, one head per task.
func (d *Device) attentionCachedGo(out, q, kc, vc []float32, start, nq, nh, nkv, hd, window int) {
	group := nh / nkv
	scale := float32(1 / math.Sqrt(float64(hd)))
	d.parallel(nq*nh, func(lo, hi int) {
		scores := make([]float32, start+nq)
		for r := lo; r < hi; r++ {
			i, h := r/nh, r%nh
			kh := h / group
			qi := q[(i*nh+h)*hd:][:hd]
			t := start + i
			j0 := firstKey(0, t, window)
			mx := float32(math.Inf(-1))
			for j := j0; j <= t; j++ {
				s := dot(qi, kc[(j*nkv+kh)*hd:][:hd]) * scale
				scores[j] = s
				mx = max(mx, s)
			}
			o := out[(i*nh+h)*hd:][:hd]
			clear(o)
			var sum float32
			for j := j0; j <= t; j++ {
				p := exp32(scores[j] - mx)
				sum += p
				axpy(o, p, vc[(j*nkv+kh)*hd:][:hd])
			}
			for e := range o {
				o[e] /= sum
			}
		}
	})
}
