package cpu

import (
	"unsafe"

	"hone/engine"
)

var _ engine.BF16Attention = (*Device)(nil)

// AttentionBF16 is Attention with its two products on bf16 operands (AMX
// or AVX-512 BF16 through oneDNN, fp32 accumulation): K and V are rounded
// to bf16 once per call, each block's queries as they are gathered and its
// probabilities after the fp32 softmax. Scores, the softmax statistics,
// the saved log-sum-exp and the output stay fp32. Memory is Attention's
// plus bf16 copies of K, V and one block. Where the CPU has AVX-512 BF16
// the flash form (attention_flash.go) runs instead.
func (d *Device) AttentionBF16(out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	if d.flash > 0 {
		d.flashForward(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
		return
	}
	g := d.attnGeom(B, T, nh, nkv, hd, window)
	nkvAll := B * T * g.kvd
	k16, v16 := d.scratch16(0, nkvAll), d.scratch16(1, nkvAll)
	d.ToBF16(k16, k[:nkvAll])
	d.ToBF16(v16, v[:nkvAll])
	q16, oc := d.scratch16(2, g.tq*nh*hd), d.scratch(1, g.tq*nh*hd)
	sc, p16 := d.scratch(2, nh*g.tq*T), d.scratch16(3, nh*g.tq*T)
	for b := 0; b < B; b++ {
		for i0 := 0; i0 < T; i0 += g.tq {
			i1 := min(i0+g.tq, T)
			tq, k0 := i1-i0, g.keyStart(docStart, b, i0)
			nk := i1 - k0
			d.gather16(q16, q, g, b, i0, tq)
			kb, vb := k16[(b*T+k0)*g.kvd:], v16[(b*T+k0)*g.kvd:]
			d.mm.run(bf16Key(g.scoresKey(tq, nk)), ptr(sc), ptr16(q16), ptr16(kb))
			d.softmaxBlock(sc, lse, docStart, g, b, i0, tq, k0, nk)
			d.ToBF16(p16[:nh*tq*nk], sc[:nh*tq*nk])
			d.mm.run(bf16Key(g.pvKey(tq, nk)), ptr(oc), ptr16(p16), ptr16(vb))
			g.scatter(out, oc, b, i0, tq)
		}
	}
}

// AttentionBackwardBF16 is AttentionBackward with bf16 product operands:
// P and dS are rounded after their fp32 computation, Q and dO as they are
// gathered, K and V once per call; the row sums δ = rowsum(dO∘O), dS and
// every gradient are fp32.
func (d *Device) AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	if d.flash > 0 {
		d.flashBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
		return
	}
	g := d.attnGeom(B, T, nh, nkv, hd, window)
	nkvAll := B * T * g.kvd
	k16, v16 := d.scratch16(0, nkvAll), d.scratch16(1, nkvAll)
	d.ToBF16(k16, k[:nkvAll])
	d.ToBF16(v16, v[:nkvAll])
	n := g.tq * nh * hd
	q16, do16 := d.scratch16(2, n), d.scratch16(4, n)
	oc, doc, dqc := d.scratch(1, n), d.scratch(3, n), d.scratch(4, n)
	sc, dsc := d.scratch(2, nh*g.tq*T), d.scratch(5, nh*g.tq*T)
	p16, ds16 := d.scratch16(3, nh*g.tq*T), d.scratch16(5, nh*g.tq*T)
	delta := d.scratch(6, nh*g.tq)
	d.Zero(dk[:nkvAll])
	d.Zero(dv[:nkvAll])
	for b := 0; b < B; b++ {
		for i0 := 0; i0 < T; i0 += g.tq {
			i1 := min(i0+g.tq, T)
			tq, k0 := i1-i0, g.keyStart(docStart, b, i0)
			nk := i1 - k0
			d.gather16(q16, q, g, b, i0, tq)
			g.gather(oc, out, b, i0, tq)
			g.gather(doc, dout, b, i0, tq)
			d.ToBF16(do16[:nh*tq*hd], doc[:nh*tq*hd])
			rows := nh * tq
			d.rowDeltas(delta, doc, oc, rows, hd)
			off := (b*T + k0) * g.kvd
			kb, vb, dkb, dvb := k16[off:], v16[off:], dk[off:], dv[off:]
			d.mm.run(bf16Key(g.scoresKey(tq, nk)), ptr(sc), ptr16(q16), ptr16(kb))
			d.probsBlock(sc, lse, docStart, g, b, i0, tq, k0, nk)
			d.ToBF16(p16[:rows*nk], sc[:rows*nk])
			d.mm.run(bf16Key(g.dvKey(tq, nk)), ptr(dvb), ptr16(p16), ptr16(do16))
			d.mm.run(bf16Key(g.scoresKey(tq, nk)), ptr(dsc), ptr16(do16), ptr16(vb))
			d.scoreGrads(dsc, sc, delta, rows, nk, g.scale)
			d.ToBF16(ds16[:rows*nk], dsc[:rows*nk])
			d.mm.run(bf16Key(g.pvKey(tq, nk)), ptr(dqc), ptr16(ds16), ptr16(kb))
			d.mm.run(bf16Key(g.dvKey(tq, nk)), ptr(dkb), ptr16(ds16), ptr16(q16))
			g.scatter(dq, dqc, b, i0, tq)
		}
	}
}

// bf16Key is key with bf16 operands (the output stays fp32).
func bf16Key(key mmKey) mmKey {
	key.b16 = true
	return key
}

// gather16 is geom.gather rounding to bf16 as it copies.
func (d *Device) gather16(dst []uint16, x []float32, g geom, b, i0, tq int) {
	for h := 0; h < g.nh; h++ {
		for t := 0; t < tq; t++ {
			o, s := dst[(h*tq+t)*g.hd:(h*tq+t+1)*g.hd], x[(b*g.T+i0+t)*g.qd+h*g.hd:][:g.hd]
			if simd {
				simdToBF16(o, s)
				continue
			}
			for j, v := range s {
				o[j] = toBF16(v)
			}
		}
	}
}

// scratch16 is scratch for bf16 buffers.
func (d *Device) scratch16(i, n int) []uint16 {
	for len(d.bufs16) <= i {
		d.bufs16 = append(d.bufs16, nil)
	}
	if len(d.bufs16[i]) < n {
		d.bufs16[i] = make([]uint16, n)
	}
	return d.bufs16[i][:n]
}

func ptr16(x []uint16) unsafe.Pointer { return unsafe.Pointer(&x[0]) }
