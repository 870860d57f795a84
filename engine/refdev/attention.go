package refdev

import "math"

// Attention: for each row b, head h and query t, softmax over keys
// first(docStart, t, window)..t of q·k/√hd, then the weighted sum of values; query head h
// reads key/value head h/(nh/nkv).
func (d *Device) Attention(out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	O, LSE, Q, K, V, DS := d.f32.data(out), d.f32.data(lse), d.f32.data(q), d.f32.data(k), d.f32.data(v), d.i32.data(docStart)
	scale := float32(1 / math.Sqrt(float64(hd)))
	p := make([]float32, T)
	for b := 0; b < B; b++ {
		for h := 0; h < nh; h++ {
			kh := h / (nh / nkv)
			for t := 0; t < T; t++ {
				qt := Q[((b*T+t)*nh+h)*hd:][:hd]
				j0 := first(int(DS[b*T+t]), t, window)
				l := softmax(p, qt, K, j0, t, func(j int) int { return ((b*T+j)*nkv + kh) * hd }, scale)
				LSE[(b*nh+h)*T+t] = l
				weighted(O[((b*T+t)*nh+h)*hd:][:hd], p, V, j0, t, func(j int) int { return ((b*T+j)*nkv + kh) * hd })
			}
		}
	}
}

// first is the first key query t sees: its document's start, or the
// oldest key less than window positions behind it.
func first(docStart, t, window int) int {
	if window > 0 {
		return max(docStart, t-window+1)
	}
	return docStart
}

// softmax fills p[j0..t] with the probabilities of q against the keys at
// K[at(j)] and returns their log-sum-exp.
func softmax(p, q, K []float32, j0, t int, at func(j int) int, scale float32) float32 {
	mx := float32(math.Inf(-1))
	for j := j0; j <= t; j++ {
		p[j] = dot(q, K[at(j):]) * scale
		mx = max(mx, p[j])
	}
	var sum float32
	for j := j0; j <= t; j++ {
		p[j] = float32(math.Exp(float64(p[j] - mx)))
		sum += p[j]
	}
	for j := j0; j <= t; j++ {
		p[j] /= sum
	}
	return mx + float32(math.Log(float64(sum)))
}

// weighted sets o = Σ_j p[j]·V[at(j)].
func weighted(o, p, V []float32, j0, t int, at func(j int) int) {
	clear(o)
	for j := j0; j <= t; j++ {
		for e := range o {
			o[e] += p[j] * V[at(j)+e]
		}
	}
}

func dot(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func (d *Device) AttentionCached(out, q, kc, vc []float32, start, nq, nh, nkv, hd, window int) {
	O, Q, K, V := d.f32.data(out), d.f32.data(q), d.f32.data(kc), d.f32.data(vc)
	scale := float32(1 / math.Sqrt(float64(hd)))
	p := make([]float32, start+nq)
	for i := 0; i < nq; i++ {
		for h := 0; h < nh; h++ {
			kh := h / (nh / nkv)
			at := func(j int) int { return (j*nkv + kh) * hd }
			j0 := first(0, start+i, window)
			softmax(p, Q[(i*nh+h)*hd:][:hd], K, j0, start+i, at, scale)
			weighted(O[(i*nh+h)*hd:][:hd], p, V, j0, start+i, at)
		}
	}
}

// AttentionBackward recomputes the probabilities from the saved lse and
// applies dV += P·dO, dS = P∘(dO·V − dO·O)·scale, dQ = dS·K, dK += dS·Q.
func (d *Device) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	DQ, DK, DV := d.f32.data(dq), d.f32.data(dk), d.f32.data(dv)
	DO, O, LSE, Q, K, V, DS := d.f32.data(dout), d.f32.data(out), d.f32.data(lse), d.f32.data(q), d.f32.data(k), d.f32.data(v), d.i32.data(docStart)
	scale := float32(1 / math.Sqrt(float64(hd)))
	clear(DQ[:B*T*nh*hd])
	clear(DK[:B*T*nkv*hd])
	clear(DV[:B*T*nkv*hd])
	for b := 0; b < B; b++ {
		for h := 0; h < nh; h++ {
			kh := h / (nh / nkv)
			for t := 0; t < T; t++ {
				off := ((b*T+t)*nh + h) * hd
				qt, dot_, dqt := Q[off:][:hd], DO[off:][:hd], DQ[off:][:hd]
				delta := dot(dot_, O[off:][:hd])
				l := LSE[(b*nh+h)*T+t]
				for j := first(int(DS[b*T+t]), t, window); j <= t; j++ {
					ko := ((b*T+j)*nkv + kh) * hd
					p := float32(math.Exp(float64(dot(qt, K[ko:])*scale - l)))
					ds := p * (dot(dot_, V[ko:]) - delta) * scale
					for e := 0; e < hd; e++ {
						DV[ko+e] += p * dot_[e]
						dqt[e] += ds * K[ko+e]
						DK[ko+e] += ds * qt[e]
					}
				}
			}
		}
	}
}
