package cpu

import (
	"math"
	"unsafe"
)

// Attention runs in query blocks. For each row b and block of queries
// [i0,i1), the keys it can see are [k0,i1) with k0 the block's first
// document start (rounded down to a block boundary so few matmul shapes
// exist). Scores for the block, (NH, tq, nk), come from one batched oneDNN
// matmul that reads K in place (grouped-query heads batch over the kv head),
// are masked and soft-maxed in Go, and multiply V in a second matmul. Memory
// is NH·tq·T floats, linear in the row length for long rows.
//
// Buffers (per block): qc, oc (NKV, group·tq, HD) contiguous gathers of the
// block's queries and outputs; sc (NKV, group·tq, nk) scores/probabilities.
//
// Where the CPU has AVX-512F the fp32 flash form (attention_flash32.go)
// runs instead: O(T) memory per head, causal blocks skipped.
func (d *Device) Attention(out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	if d.flash32 != flash32Off {
		d.flash32Forward(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
		return
	}
	g := d.attnGeom(B, T, nh, nkv, hd, window)
	qc, oc := d.scratch(0, g.tq*nh*hd), d.scratch(1, g.tq*nh*hd)
	sc := d.scratch(2, nh*g.tq*T)
	for b := 0; b < B; b++ {
		for i0 := 0; i0 < T; i0 += g.tq {
			i1 := min(i0+g.tq, T)
			tq, k0 := i1-i0, g.keyStart(docStart, b, i0)
			nk := i1 - k0
			g.gather(qc, q, b, i0, tq)
			kb, vb := k[(b*T+k0)*g.kvd:], v[(b*T+k0)*g.kvd:]
			d.mm.run(g.scoresKey(tq, nk), ptr(sc), ptr(qc), ptr(kb))
			d.softmaxBlock(sc, lse, docStart, g, b, i0, tq, k0, nk)
			d.mm.run(g.pvKey(tq, nk), ptr(oc), ptr(sc), ptr(vb))
			g.scatter(out, oc, b, i0, tq)
		}
	}
}

// AttentionBackward recomputes each block's probabilities from the saved
// log-sum-exp, then: dV += Pᵀ·dO, dP = dO·Vᵀ, dS = P∘(dP − rowsum(dO∘O))·scale,
// dQ = dS·K, dK += dSᵀ·Q, each a batched matmul over the kv heads (the
// group's query rows are the reduction dimension of dK and dV).
func (d *Device) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	if d.flash32 != flash32Off {
		d.flash32Backward(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
		return
	}
	g := d.attnGeom(B, T, nh, nkv, hd, window)
	n := g.tq * nh * hd
	qc, oc, doc, dqc := d.scratch(0, n), d.scratch(1, n), d.scratch(3, n), d.scratch(4, n)
	sc, dsc := d.scratch(2, nh*g.tq*T), d.scratch(5, nh*g.tq*T)
	delta := d.scratch(6, nh*g.tq)
	d.Zero(dk[:B*T*g.kvd])
	d.Zero(dv[:B*T*g.kvd])
	for b := 0; b < B; b++ {
		for i0 := 0; i0 < T; i0 += g.tq {
			i1 := min(i0+g.tq, T)
			tq, k0 := i1-i0, g.keyStart(docStart, b, i0)
			nk := i1 - k0
			g.gather(qc, q, b, i0, tq)
			g.gather(oc, out, b, i0, tq)
			g.gather(doc, dout, b, i0, tq)
			rows := nh * tq
			d.rowDeltas(delta, doc, oc, rows, hd)
			off := (b*T + k0) * g.kvd
			kb, vb, dkb, dvb := k[off:], v[off:], dk[off:], dv[off:]
			d.mm.run(g.scoresKey(tq, nk), ptr(sc), ptr(qc), ptr(kb))
			d.probsBlock(sc, lse, docStart, g, b, i0, tq, k0, nk)
			d.mm.run(g.dvKey(tq, nk), ptr(dvb), ptr(sc), ptr(doc))
			d.mm.run(g.scoresKey(tq, nk), ptr(dsc), ptr(doc), ptr(vb))
			d.scoreGrads(dsc, sc, delta, rows, nk, g.scale)
			d.mm.run(g.pvKey(tq, nk), ptr(dqc), ptr(dsc), ptr(kb))
			d.mm.run(g.dvKey(tq, nk), ptr(dkb), ptr(dsc), ptr(qc))
			g.scatter(dq, dqc, b, i0, tq)
		}
	}
}

// geom holds the sizes of one attention call.
type geom struct {
	B, T, nh, nkv, hd, group, qd, kvd, tq int
	window                                int // sliding window, 0 = none
	scale                                 float32
}

// attnGeom picks the query block: the whole row when all heads' scores fit
// in 8M floats, else blocks of 128 queries (or d.attnBlock, for tests).
func (d *Device) attnGeom(B, T, nh, nkv, hd, window int) geom {
	tq := d.queryBlock(T, nh)
	return geom{B: B, T: T, nh: nh, nkv: nkv, hd: hd, group: nh / nkv, qd: nh * hd, kvd: nkv * hd, tq: tq,
		window: window, scale: float32(1 / math.Sqrt(float64(hd)))}
}

// queryBlock is the number of queries attention handles at once.
func (d *Device) queryBlock(T, nh int) int {
	if d.attnBlock > 0 {
		return min(T, d.attnBlock)
	}
	if nh*T*T > 8<<20 {
		return 128
	}
	return T
}

// AttentionScratch is the scratch Attention and AttentionBackward take for
// these sizes (see scratch): the fp32 flash form's packed operands and
// workspaces (flash32Bytes), which share nothing with the bf16 forms and
// are all fp32 training holds; or the oneDNN blocked form's four (tq, QD)
// gathers, scores and their gradient (NH, tq, T), and the (NH, tq) row
// sums of the backward pass, with the bf16 forms' added, as a device that
// runs both keeps both (the blocked bf16 form shares the blocked fp32
// form's buffers but the query gather, attention_bf16.go).
func (d *Device) AttentionScratch(B, T, nh, nkv, hd int) int64 {
	tq := int64(d.queryBlock(T, nh))
	switch {
	case d.flash32 != flash32Off:
		return d.flash32Bytes(B, T, nh, nkv, hd)
	case d.flash > 0:
		return d.attentionScratch32(T, nh, hd) + d.flashBytes(B, T, nh, nkv, hd)
	}
	return 4*tq*int64(nh*hd) + d.AttentionScratchBF16(B, T, nh, nkv, hd)
}

// AttentionScratchBF16 is the scratch of the bf16 forms alone: the flash
// kernels' (attention_flash.go), or where they do not run the blocked
// bf16 form's, which shares the fp32 form's buffers and adds bf16 copies
// of K and V, two gathers and the probabilities and their gradient (all
// but the fp32 form's query gather).
func (d *Device) AttentionScratchBF16(B, T, nh, nkv, hd int) int64 {
	if d.flash > 0 {
		return d.flashBytes(B, T, nh, nkv, hd)
	}
	tq := int64(d.queryBlock(T, nh))
	return d.attentionScratch32(T, nh, hd) - 4*tq*int64(nh*hd) + d.attentionScratch16(B, T, nh, nkv, hd)
}

// attentionScratch16 is the blocked bf16 form's own bf16 buffers in bytes.
func (d *Device) attentionScratch16(B, T, nh, nkv, hd int) int64 {
	tq := int64(d.queryBlock(T, nh))
	return 2 * (2*int64(B*T*nkv*hd) + 2*tq*int64(nh*hd) + 2*int64(nh)*tq*int64(T))
}

// attentionScratch32 is the fp32 form's scratch in bytes.
func (d *Device) attentionScratch32(T, nh, hd int) int64 {
	tq := int64(d.queryBlock(T, nh))
	return 4 * (4*tq*int64(nh*hd) + 2*int64(nh)*tq*int64(T) + int64(nh)*tq)
}

// scratchBytes is the scratch the device holds now.
func (d *Device) scratchBytes() int64 {
	var n int64
	for _, b := range d.bufs {
		n += 4 * int64(len(b))
	}
	for _, b := range d.bufs16 {
		n += 2 * int64(len(b))
	}
	return n
}

// keyStart is the first key a block of queries can see, rounded down to a
// multiple of the block size (masking hides the extra keys). The block's
// first query sees the earliest key: later queries' document starts and
// window starts are never earlier.
func (g geom) keyStart(docStart []int32, b, i0 int) int {
	k0 := g.firstKey(docStart, b, i0)
	return k0 / g.tq * g.tq
}

// firstKey is the first key query t of row b sees.
func (g geom) firstKey(docStart []int32, b, t int) int {
	return firstKey(int(docStart[b*g.T+t]), t, g.window)
}

// firstKey is the later of a query's document start and, with a sliding
// window, the oldest key less than window positions behind query t.
func firstKey(docStart, t, window int) int {
	if window > 0 {
		return max(docStart, t-window+1)
	}
	return docStart
}

// gather copies queries [i0,i0+tq) of row b from token-major x (N, NH·HD) into
// dst laid out (NH, tq, HD) = (NKV, group·tq, HD).
func (g geom) gather(dst, x []float32, b, i0, tq int) {
	for h := 0; h < g.nh; h++ {
		for t := 0; t < tq; t++ {
			copy(dst[(h*tq+t)*g.hd:(h*tq+t+1)*g.hd], x[(b*g.T+i0+t)*g.qd+h*g.hd:][:g.hd])
		}
	}
}

// scatter is the inverse of gather.
func (g geom) scatter(x, src []float32, b, i0, tq int) {
	for h := 0; h < g.nh; h++ {
		for t := 0; t < tq; t++ {
			copy(x[(b*g.T+i0+t)*g.qd+h*g.hd:][:g.hd], src[(h*tq+t)*g.hd:(h*tq+t+1)*g.hd])
		}
	}
}

// scoresKey: c(NKV, M, nk) = a(NKV, M, HD) · bᵀ where b is keys (or values)
// read in place from the token-major buffer: element (kh, j, e) at
// j·KVD + kh·HD + e. M = group·tq.
func (g geom) scoresKey(tq, nk int) mmKey {
	M := g.group * tq
	return mmKey{nd: 3,
		a: [4]int{g.nkv, M, g.hd}, as: [4]int{M * g.hd, g.hd, 1},
		b: [4]int{g.nkv, g.hd, nk}, bs: [4]int{g.hd, 1, g.kvd},
		c: [4]int{g.nkv, M, nk}, cs: [4]int{M * nk, nk, 1}}
}

// pvKey: c(NKV, M, HD) = a(NKV, M, nk) · b(NKV, nk, HD) with b read in place.
func (g geom) pvKey(tq, nk int) mmKey {
	M := g.group * tq
	return mmKey{nd: 3,
		a: [4]int{g.nkv, M, nk}, as: [4]int{M * nk, nk, 1},
		b: [4]int{g.nkv, nk, g.hd}, bs: [4]int{g.hd, g.kvd, 1},
		c: [4]int{g.nkv, M, g.hd}, cs: [4]int{M * g.hd, g.hd, 1}}
}

// dvKey: c(NKV, nk, HD) += a(NKV, M, nk)ᵀ · b(NKV, M, HD), c written in place
// in the token-major gradient buffer.
func (g geom) dvKey(tq, nk int) mmKey {
	M := g.group * tq
	return mmKey{nd: 3, acc: true,
		a: [4]int{g.nkv, nk, M}, as: [4]int{M * nk, 1, nk},
		b: [4]int{g.nkv, M, g.hd}, bs: [4]int{M * g.hd, g.hd, 1},
		c: [4]int{g.nkv, nk, g.hd}, cs: [4]int{g.hd, g.kvd, 1}}
}

// softmaxBlock turns raw scores into probabilities in place, masking keys
// outside [firstKey(t), t], and records each row's log-sum-exp.
func (d *Device) softmaxBlock(sc, lse []float32, docStart []int32, g geom, b, i0, tq, k0, nk int) {
	d.parallel(g.nh*tq, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			h, t := r/tq, i0+r%tq
			row := sc[r*nk : (r+1)*nk]
			j0, j1 := g.firstKey(docStart, b, t)-k0, t-k0+1
			if simd {
				lse[(b*g.nh+h)*g.T+t] = simdSoftmaxRow(row, j0, j1, g.scale)
				continue
			}
			mx := float32(math.Inf(-1))
			for j := j0; j < j1; j++ {
				row[j] *= g.scale
				mx = max(mx, row[j])
			}
			var sum float32
			for j := j0; j < j1; j++ {
				e := exp32(row[j] - mx)
				row[j] = e
				sum += e
			}
			inv := 1 / sum
			clear(row[:j0])
			for j := j0; j < j1; j++ {
				row[j] *= inv
			}
			clear(row[j1:])
			lse[(b*g.nh+h)*g.T+t] = mx + float32(math.Log(float64(sum)))
		}
	})
}

// probsBlock recomputes probabilities from raw scores and the saved lse.
func (d *Device) probsBlock(sc, lse []float32, docStart []int32, g geom, b, i0, tq, k0, nk int) {
	d.parallel(g.nh*tq, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			h, t := r/tq, i0+r%tq
			row := sc[r*nk : (r+1)*nk]
			j0, j1 := g.firstKey(docStart, b, t)-k0, t-k0+1
			l := lse[(b*g.nh+h)*g.T+t]
			if simd {
				simdProbsRow(row, j0, j1, g.scale, l)
				continue
			}
			clear(row[:j0])
			for j := j0; j < j1; j++ {
				row[j] = exp32(row[j]*g.scale - l)
			}
			clear(row[j1:])
		}
	})
}

// scratch returns reusable buffer i with at least n floats; buffers grow and
// are kept, so steady-state steps allocate nothing.
func (d *Device) scratch(i, n int) []float32 {
	for len(d.bufs) <= i {
		d.bufs = append(d.bufs, nil)
	}
	if len(d.bufs[i]) < n {
		d.bufs[i] = make([]float32, n)
	}
	return d.bufs[i][:n]
}

func ptr(x []float32) unsafe.Pointer { return unsafe.Pointer(&x[0]) }

// rowDeltas sets delta(rows) to the dot product of each row of dout and
// out (rows, hd): the softmax backward's Σ_j p_j·dp_j.
func (d *Device) rowDeltas(delta, dout, out []float32, rows, hd int) {
	d.parallel(rows, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			delta[r] = dot(dout[r*hd:(r+1)*hd], out[r*hd:(r+1)*hd])
		}
	})
}

// scoreGrads turns dp(rows, nk), held in ds, into the scores' gradient
// p·(dp − delta)·scale in place.
func (d *Device) scoreGrads(ds, p, delta []float32, rows, nk int, scale float32) {
	d.parallel(rows, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			pr, dr, dl := p[r*nk:(r+1)*nk], ds[r*nk:(r+1)*nk], delta[r]
			if simd {
				simdDScore(dr, pr, dl, scale)
				continue
			}
			for j := range pr {
				dr[j] = pr[j] * (dr[j] - dl) * scale
			}
		}
	})
}
