package cpu

import (
	"math"
)

// attentionNaive is the plain reference for Attention: one query row at a
// time, scalar loops. Tests compare the blocked kernel against it.
func (d *Device) attentionNaive(out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd int) {
	group := nh / nkv
	scale := float32(1 / math.Sqrt(float64(hd)))
	d.parallel(B*nh, func(lo, hi int) {
		scores := make([]float32, T)
		acc := make([]float32, hd)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/nh, bh%nh
			kh := h / group
			for t := 0; t < T; t++ {
				qi := q[((b*T+t)*nh+h)*hd:][:hd]
				s0 := int(docStart[b*T+t])
				mx := float32(math.Inf(-1))
				for j := s0; j <= t; j++ {
					s := dot(qi, k[((b*T+j)*nkv+kh)*hd:][:hd]) * scale
					scores[j] = s
					mx = max(mx, s)
				}
				var sum float64
				clear(acc)
				for j := s0; j <= t; j++ {
					p := float32(math.Exp(float64(scores[j] - mx)))
					sum += float64(p)
					axpy(acc, p, v[((b*T+j)*nkv+kh)*hd:][:hd])
				}
				inv := float32(1 / sum)
				o := out[((b*T+t)*nh+h)*hd:][:hd]
				for i := range o {
					o[i] = acc[i] * inv
				}
				lse[(b*nh+h)*T+t] = mx + float32(math.Log(sum))
			}
		}
	})
}

// attentionBackwardNaive is the reference for AttentionBackward. Work is
// split by (row, key/value head) so that all query heads sharing a key/value
// head run in one worker and dk, dv never race.
func (d *Device) attentionBackwardNaive(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd int) {
	group := nh / nkv
	scale := float32(1 / math.Sqrt(float64(hd)))
	d.parallel(B*nkv, func(lo, hi int) {
		for bk := lo; bk < hi; bk++ {
			b, kh := bk/nkv, bk%nkv
			for t := 0; t < T; t++ {
				clear(dk[((b*T+t)*nkv+kh)*hd:][:hd])
				clear(dv[((b*T+t)*nkv+kh)*hd:][:hd])
			}
			for h := kh * group; h < (kh+1)*group; h++ {
				for t := 0; t < T; t++ {
					off := ((b*T+t)*nh + h) * hd
					qi, doi, dqi := q[off:][:hd], dout[off:][:hd], dq[off:][:hd]
					clear(dqi)
					D := dot(doi, out[off:][:hd])
					l := lse[(b*nh+h)*T+t]
					for j := int(docStart[b*T+t]); j <= t; j++ {
						ko := ((b*T+j)*nkv + kh) * hd
						kj, vj := k[ko:][:hd], v[ko:][:hd]
						p := float32(math.Exp(float64(dot(qi, kj)*scale - l)))
						axpy(dv[ko:][:hd], p, doi)
						ds := p * (dot(doi, vj) - D) * scale
						axpy(dqi, ds, kj)
						axpy(dk[ko:][:hd], ds, qi)
					}
				}
			}
		}
	})
}

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

// AttentionCached handles the few queries of a decoding step with plain
// loops, one head per task: the work is tiny next to the projections.
func (d *Device) AttentionCached(out, q, kc, vc []float32, start, nq, nh, nkv, hd int) {
	group := nh / nkv
	scale := float32(1 / math.Sqrt(float64(hd)))
	d.parallel(nq*nh, func(lo, hi int) {
		scores := make([]float32, start+nq)
		for r := lo; r < hi; r++ {
			i, h := r/nh, r%nh
			kh := h / group
			qi := q[(i*nh+h)*hd:][:hd]
			t := start + i
			mx := float32(math.Inf(-1))
			for j := 0; j <= t; j++ {
				s := dot(qi, kc[(j*nkv+kh)*hd:][:hd]) * scale
				scores[j] = s
				mx = max(mx, s)
			}
			o := out[(i*nh+h)*hd:][:hd]
			clear(o)
			var sum float32
			for j := 0; j <= t; j++ {
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
