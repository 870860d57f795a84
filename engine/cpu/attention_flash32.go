package cpu

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lm
#if defined(__x86_64__)
#include <math.h>
#include <immintrin.h>
#include "simd.h"
#include "flash_f32.h"
#else
#include <stdint.h>
static long f32_fwd_ws(long hp, long group) { return 0; }
static long f32_bwd_ws(long Tp, long hp) { return 0; }
static void f32_pack(int kind, float *dst, const float *src, long ld, long T, long Tp, long hd, long hp) {}
static void f32_fwd(float *out, float *lse, const float *q, long ld, const float *kt, const float *vr, const int32_t *ds,
	long T, long hd, long hp, long group, long window, float scale, long i0, float *ws) {}
static void f32_bwd(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse, const float *q,
	const float *k, const float *v, const int32_t *ds, long T, long qd, long kvd, long hd, long hp, long group, long window,
	float scale, float *ws) {}
#endif
*/
import "C"

import (
	"math"
	"os"
)

// Flash attention in fp32 (flash_f32.h) is the fp32 Attention and
// AttentionBackward where the CPU has AVX-512F: the bf16 flash form's
// blocking (64 queries × 64 keys, whole key blocks before a block's first
// document or window start skipped, online softmax) with fp32 operands and
// AVX-512F FMA products. The backward runs one task per (row, kv head), so
// dK and dV are never shared. Memory is packed copies of the operands,
// O(T) per head, where the oneDNN blocked form keeps NH×tq×T scores and
// computes the whole causal square of a short row.
const flash32Block = 64

// Values of Device.flash32.
const (
	flash32Off    = iota // the oneDNN blocked attention (attention.go)
	flash32Go            // flash32Forward/Backward in Go: the portable path and the reference
	flash32AVX512        // flash_f32.h
)

// flash32ISA is the fp32 attention the CPU allows: the AVX-512F kernels
// where the AVX-512 C kernels run (simd), else the oneDNN blocked form,
// faster than the scalar Go flash (the oneDNN products are vectorized on
// any x86-64). HONE_CPU_KERNELS=noflash (or =go) keeps the oneDNN form.
var flash32ISA = func() int {
	if !simd || os.Getenv("HONE_CPU_KERNELS") == "noflash" {
		return flash32Off
	}
	return flash32AVX512
}()

// flash32Geom is the padded sizes of an fp32 flash call: Tp rows (a
// multiple of the block), hp columns per head (a multiple of 16).
func flash32Geom(T, hd int) (Tp, hp int) {
	return (T + flash32Block - 1) / flash32Block * flash32Block, (hd + 15) &^ 15
}

// flash32Scratch is the fp32 flash forward's and backward's scratch in
// floats: the forward's packed keys and values and one workspace per
// worker, the backward's one workspace per worker (its (row, kv head)'s
// packed operands, one query head's and the dQ, dK, dV accumulators).
func (d *Device) flash32Scratch(B, T, nh, nkv, hd int) (kv, fwd, bwd int) {
	if d.flash32 != flash32AVX512 {
		return 0, 0, 0 // the Go path allocates per task
	}
	Tp, hpad := flash32Geom(T, hd)
	fw := min(d.threads, B*nkv*(Tp/flash32Block))
	bw := min(d.threads, B*nkv)
	return B * nkv * Tp * hpad, fw * int(C.f32_fwd_ws(C.long(hpad), C.long(nh/nkv))), bw * int(C.f32_bwd_ws(C.long(Tp), C.long(hpad)))
}

// flash32Bytes is flash32Scratch in bytes: the backward's workspaces reuse
// the packed keys' buffer.
func (d *Device) flash32Bytes(B, T, nh, nkv, hd int) int64 {
	kv, fwd, bwd := d.flash32Scratch(B, T, nh, nkv, hd)
	return 4 * (int64(max(kv, bwd)) + int64(kv) + int64(fwd))
}

// Scratch buffers of the fp32 flash form (d.scratch), after the oneDNN
// blocked form's 0-6, so a device running both keeps both.
const (
	f32BufKeys = 7 + iota // packed keys; the backward's workspaces
	f32BufValues
	f32BufFwd
)

func (d *Device) flash32Forward(out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	if B*T == 0 {
		return
	}
	checkAttn(q, k, v, out, docStart, lse, B, T, nh, nkv, hd)
	if d.flash32 == flash32Go {
		d.flash32ForwardGo(out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
		return
	}
	g := d.attnGeom(B, T, nh, nkv, hd, window)
	Tp, hpad := flash32Geom(T, hd)
	kvN, fwdN, bwdN := d.flash32Scratch(B, T, nh, nkv, hd)
	kt, vr := d.scratch(f32BufKeys, max(kvN, bwdN))[:kvN], d.scratch(f32BufValues, kvN)
	ws := d.scratch(f32BufFwd, fwdN)
	per := Tp * hpad
	d.dynamic(2*B*nkv, func(i int) {
		bk := i / 2
		b, kh := bk/nkv, bk%nkv
		dst, src := kt, k
		if i%2 == 1 {
			dst, src = vr, v
		}
		C.f32_pack(C.int(i%2), fp(dst[bk*per:]), fp(src[b*T*g.kvd+kh*hd:]), C.long(g.kvd), C.long(T), C.long(Tp), C.long(hd), C.long(hpad))
	})
	nb := Tp / flash32Block
	wsN := fwdN / min(d.threads, B*nkv*nb)
	// One task per (row, kv head, query block), its group's query heads
	// together; later query blocks see more keys: hand them out first.
	d.dynamicW(B*nkv*nb, func(w, i int) {
		blk, bk := nb-1-i/(B*nkv), i%(B*nkv)
		b, h0 := bk/nkv, bk%nkv*g.group
		C.f32_fwd(fp(out[b*T*g.qd+h0*hd:]), fp(lse[(b*nh+h0)*T:]), fp(q[b*T*g.qd+h0*hd:]), C.long(g.qd),
			fp(kt[bk*per:]), fp(vr[bk*per:]), ip(docStart[b*T:]), C.long(T), C.long(hd), C.long(hpad),
			C.long(g.group), C.long(window), C.float(g.scale), C.long(blk*flash32Block), fp(ws[w*wsN:]))
	})
}

func (d *Device) flash32Backward(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	if B*T == 0 {
		return
	}
	checkAttn(q, k, v, out, docStart, lse, B, T, nh, nkv, hd)
	checkAttn(dq, dk, dv, dout, docStart, lse, B, T, nh, nkv, hd)
	if d.flash32 == flash32Go {
		d.flash32BackwardGo(dq, dk, dv, dout, out, lse, q, k, v, docStart, B, T, nh, nkv, hd, window)
		return
	}
	g := d.attnGeom(B, T, nh, nkv, hd, window)
	_, hpad := flash32Geom(T, hd)
	kvN, _, bwdN := d.flash32Scratch(B, T, nh, nkv, hd)
	ws := d.scratch(f32BufKeys, max(kvN, bwdN))
	wsN := bwdN / min(d.threads, B*nkv)
	d.dynamicW(B*nkv, func(w, i int) {
		b, kh := i/nkv, i%nkv
		h0 := kh * g.group
		qo, ko := b*T*g.qd+h0*hd, b*T*g.kvd+kh*hd
		C.f32_bwd(fp(dq[qo:]), fp(dk[ko:]), fp(dv[ko:]), fp(dout[qo:]), fp(out[qo:]), fp(lse[(b*nh+h0)*T:]),
			fp(q[qo:]), fp(k[ko:]), fp(v[ko:]), ip(docStart[b*T:]), C.long(T), C.long(g.qd), C.long(g.kvd),
			C.long(hd), C.long(hpad), C.long(g.group), C.long(window), C.float(g.scale), fp(ws[w*wsN:]))
	})
}

// flash32ForwardGo is flash32Forward in Go, block for block: per (row,
// head, 64-query block), the key blocks its queries can see, a running
// max and sum per query, the output rescaled when the max grows.
func (d *Device) flash32ForwardGo(out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	g := d.attnGeom(B, T, nh, nkv, hd, window)
	nb := (T + flash32Block - 1) / flash32Block
	d.dynamic(B*nh*nb, func(i int) {
		b, h, i0 := i/(nh*nb), i/nb%nh, i%nb*flash32Block
		kh, rows := h/g.group, min(flash32Block, T-i0)
		o := make([]float32, rows*hd)
		var mx, l, s [flash32Block]float32
		for r := range rows {
			mx[r] = float32(math.Inf(-1))
		}
		for j0 := g.firstKey(docStart, b, i0) / flash32Block * flash32Block; j0 <= i0; j0 += flash32Block {
			for r := range rows {
				t := i0 + r
				lo, hi := max(g.firstKey(docStart, b, t), j0), min(t+1, j0+flash32Block)
				if lo >= hi {
					continue
				}
				qt, or := q[(b*T+t)*g.qd+h*hd:][:hd], o[r*hd:(r+1)*hd]
				mnew := mx[r]
				for j := lo; j < hi; j++ {
					s[j-j0] = dot(qt, k[(b*T+j)*g.kvd+kh*hd:][:hd]) * g.scale
					mnew = max(mnew, s[j-j0])
				}
				alpha := float32(0)
				if !math.IsInf(float64(mx[r]), -1) {
					alpha = exp32(mx[r] - mnew)
				}
				for e := range or {
					or[e] *= alpha
				}
				l[r] *= alpha
				for j := lo; j < hi; j++ {
					p := exp32(s[j-j0] - mnew)
					l[r] += p
					axpy(or, p, v[(b*T+j)*g.kvd+kh*hd:][:hd])
				}
				mx[r] = mnew
			}
		}
		for r := range rows {
			t := i0 + r
			inv := 1 / l[r]
			for e, x := range o[r*hd : (r+1)*hd] {
				out[(b*T+t)*g.qd+h*hd+e] = x * inv
			}
			lse[(b*nh+h)*T+t] = mx[r] + float32(math.Log(float64(l[r])))
		}
	})
}

// flash32BackwardGo is flash32Backward in Go: per (row, kv head), its
// group's heads, key blocks outer and the query blocks that see them
// inner, P recomputed from the saved log-sum-exp.
func (d *Device) flash32BackwardGo(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	g := d.attnGeom(B, T, nh, nkv, hd, window)
	d.dynamic(B*nkv, func(i int) {
		b, kh := i/nkv, i%nkv
		row := func(x []float32, t, h, w int) []float32 { return x[(b*T+t)*w+h*hd:][:hd] }
		for t := range T {
			clear(row(dk, t, kh, g.kvd))
			clear(row(dv, t, kh, g.kvd))
		}
		delta := make([]float32, T)
		for h := kh * g.group; h < (kh+1)*g.group; h++ {
			for t := range T {
				clear(row(dq, t, h, g.qd))
				delta[t] = dot(row(dout, t, h, g.qd), row(out, t, h, g.qd))
			}
			for j0 := 0; j0 < T; j0 += flash32Block {
				for i0 := j0; i0 < T && g.firstKey(docStart, b, i0) < j0+flash32Block; i0 += flash32Block {
					for t := i0; t < min(T, i0+flash32Block); t++ {
						qt, dot_, dqt := row(q, t, h, g.qd), row(dout, t, h, g.qd), row(dq, t, h, g.qd)
						l := lse[(b*nh+h)*T+t]
						for j := max(g.firstKey(docStart, b, t), j0); j < min(t+1, j0+flash32Block); j++ {
							kj, vj := row(k, j, kh, g.kvd), row(v, j, kh, g.kvd)
							p := exp32(dot(qt, kj)*g.scale - l)
							axpy(row(dv, j, kh, g.kvd), p, dot_)
							ds := p * (dot(dot_, vj) - delta[t]) * g.scale
							axpy(dqt, ds, kj)
							axpy(row(dk, j, kh, g.kvd), ds, qt)
						}
					}
				}
			}
		}
	})
}
