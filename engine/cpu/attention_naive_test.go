package cpu

import (
	"math"
)

// attentionNaive is the plain reference for Attention: one query row at a
// time, scalar loops; window > 0 hides keys window or more positions back. Tests compare the blocked kernel against it.
func (d *Device) attentionNaive(out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
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
				if window > 0 && t-s0 >= window { // keys window or more behind are hidden
					s0 = t - window + 1
				}
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
func (d *Device) attentionBackwardNaive(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
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
					s0 := int(docStart[b*T+t])
					if window > 0 && t-s0 >= window {
						s0 = t - window + 1
					}
					for j := s0; j <= t; j++ {
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
