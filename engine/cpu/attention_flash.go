package cpu

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lm
#if defined(__x86_64__)
#include "flash.h"
static void flash_pack(int kind, uint16_t *dst, const float *src, long ld, long T, long Tp, long hd, long hp) {
	if (kind == 0) pack_bt(dst, src, ld, T, Tp, hd, hp);
	else pack_vnni(dst, src, ld, T, Tp, hd, hp);
}
#else
#include <stdint.h>
static int flash_isa(void) { return 0; }
static long flash_fwd_ws(long hp, long group) { return 0; }
static long flash_bwd_ws(long Tp, long hp) { return 0; }
static void flash_pack(int kind, uint16_t *dst, const float *src, long ld, long T, long Tp, long hd, long hp) {}
static void flash_fwd(int amx, float *out, float *lse, const float *q, long ld, const uint16_t *kt, const uint16_t *vv,
	const int32_t *ds, long T, long hd, long hp, long group, long window, float scale, long i0, uint16_t *ws) {}
static void flash_bwd(int amx, float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
	const float *q, const float *k, const float *v, const int32_t *ds, long T, long qd, long kvd, long hd, long hp,
	long group, long window, float scale, uint16_t *ws) {}
static long flash_bwd_avx_ws(long Tp, long hp) { return 0; }
static void flash_fwd_avx(float *out, float *lse, const float *q, long ld, const uint16_t *kt, const uint16_t *vv,
	const int32_t *ds, long T, long hd, long hp, long group, long window, float scale, long i0, uint16_t *ws) {}
static void flash_bwd_avx(float *dq, float *dk, float *dv, const float *dout, const float *out, const float *lse,
	const float *q, const float *k, const float *v, const int32_t *ds, long T, long qd, long kvd, long hd, long hp,
	long group, long window, float scale, uint16_t *ws) {}
#endif
*/
import "C"

import (
	"os"
	"sync/atomic"
)

// Flash attention (flash.h) is the bf16 attention where the CPU has
// AVX-512 BF16: each (row, head, 64-query block) walks the 64-key blocks
// its queries can see (skipping whole blocks before the block's first
// document or window start), computes S = QKᵀ on bf16 operands, keeps a
// running fp32 max and sum per query (online softmax) and accumulates
// O += bf16(P)·V in fp32. The products run on AMX tiles (TDPBF16PS) where
// the CPU and kernel allow them, else with VDPBF16PS; both read the same
// packed operands. The backward is flash-attention-2's over (row, kv
// head): P recomputed from the saved log-sum-exp, δ = rowsum(dO∘O),
// dS = P∘(dP − δ)·scale rounded to bf16 for its two products. Memory is
// bf16 copies of the operands, O(T) per head: no T×T or NH×tq×T buffer.
const flashBlock = 64

// flashISA is the flash path the CPU allows: 2 AMX, 1 AVX-512 BF16, 0
// none (the oneDNN blocked attention runs). HONE_CPU_KERNELS=noamx keeps
// the AVX-512 BF16 path on AMX machines, =noflash (or =go) the oneDNN one.
var flashISA = func() int {
	isa := int(C.flash_isa())
	switch os.Getenv("HONE_CPU_KERNELS") {
	case "go", "noflash":
		return 0
	case "noamx":
		return min(isa, 1)
	}
	return isa
}()

// flashShared (tests and benchmarks only) runs the AVX-512 BF16 path
// through flash_fwd and flash_bwd, the kernels it shares with AMX, instead
// of its own flash_fwd_avx and flash_bwd_avx, which must give the same
// bits.
var flashShared bool

// flashGeom is the padded sizes of a flash call: Tp rows (a multiple of
// the block), hp columns per head (a multiple of 32, zero padded).
func flashGeom(T, hd int) (Tp, hp int) {
	return (T + flashBlock - 1) / flashBlock * flashBlock, (hd + 31) &^ 31
}

// flashScratch is the scratch of the flash forward and backward, in
// bf16 elements: packed K and V for the forward, one workspace per worker
// for each pass (the backward's holds its (row, kv head)'s packed
// operands and one query head's).
func (d *Device) flashScratch(B, T, nh, nkv, hd int) (kv, fwd, bwd int) {
	Tp, hpad := flashGeom(T, hd)
	fw := min(d.threads, B*nkv*(Tp/flashBlock))
	bw := min(d.threads, B*nkv)
	bws := int(C.flash_bwd_ws(C.long(Tp), C.long(hpad)))
	if d.flash == 1 && !flashShared {
		bws = int(C.flash_bwd_avx_ws(C.long(Tp), C.long(hpad)))
	}
	return B * nkv * Tp * hpad, fw * int(C.flash_fwd_ws(C.long(hpad), C.long(nh/nkv))), bw * bws
}

// flashBytes is flashScratch in bytes.
func (d *Device) flashBytes(B, T, nh, nkv, hd int) int64 {
	kv, fwd, bwd := d.flashScratch(B, T, nh, nkv, hd)
	return 2 * (int64(max(kv, bwd)) + int64(kv) + int64(fwd)) // the backward reuses the packed keys' buffer
}

func checkAttn(q, k, v, out []float32, docStart []int32, lse []float32, B, T, nh, nkv, hd int) {
	_, _, _ = q[B*T*nh*hd-1], out[B*T*nh*hd-1], lse[B*nh*T-1]
	_, _, _ = k[B*T*nkv*hd-1], v[B*T*nkv*hd-1], docStart[B*T-1]
}

func (d *Device) flashForward(out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	if B*T == 0 {
		return
	}
	checkAttn(q, k, v, out, docStart, lse, B, T, nh, nkv, hd)
	g := d.attnGeom(B, T, nh, nkv, hd, window)
	Tp, hpad := flashGeom(T, hd)
	kvN, fwdN, _ := d.flashScratch(B, T, nh, nkv, hd)
	kt, vv, ws := d.scratch16(6, kvN), d.scratch16(7, kvN), d.scratch16(8, fwdN)
	per := Tp * hpad
	d.dynamicW(2*B*nkv, func(_, i int) {
		bk := i / 2
		b, kh := bk/nkv, bk%nkv
		dst := kt
		src := k
		if i%2 == 1 {
			dst, src = vv, v
		}
		C.flash_pack(C.int(i%2), hp(dst[bk*per:]), fp(src[b*T*g.kvd+kh*hd:]), C.long(g.kvd), C.long(T), C.long(Tp), C.long(hd), C.long(hpad))
	})
	nb := Tp / flashBlock
	wsN := fwdN / min(d.threads, B*nkv*nb)
	// One task per (row, kv head, query block), its group's query heads
	// together; later query blocks see more keys: hand them out first.
	own := d.flash == 1 && !flashShared
	d.dynamicW(B*nkv*nb, func(w, i int) {
		blk, bk := nb-1-i/(B*nkv), i%(B*nkv)
		b, h0 := bk/nkv, bk%nkv*g.group
		if own {
			C.flash_fwd_avx(fp(out[b*T*g.qd+h0*hd:]), fp(lse[(b*nh+h0)*T:]), fp(q[b*T*g.qd+h0*hd:]), C.long(g.qd),
				hp(kt[bk*per:]), hp(vv[bk*per:]), ip(docStart[b*T:]), C.long(T), C.long(hd), C.long(hpad),
				C.long(g.group), C.long(window), C.float(g.scale), C.long(blk*flashBlock), hp(ws[w*wsN:]))
			return
		}
		C.flash_fwd(C.int(d.flash-1), fp(out[b*T*g.qd+h0*hd:]), fp(lse[(b*nh+h0)*T:]), fp(q[b*T*g.qd+h0*hd:]), C.long(g.qd),
			hp(kt[bk*per:]), hp(vv[bk*per:]), ip(docStart[b*T:]), C.long(T), C.long(hd), C.long(hpad),
			C.long(g.group), C.long(window), C.float(g.scale), C.long(blk*flashBlock), hp(ws[w*wsN:]))
	})
}

func (d *Device) flashBackward(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, B, T, nh, nkv, hd, window int) {
	if B*T == 0 {
		return
	}
	checkAttn(q, k, v, out, docStart, lse, B, T, nh, nkv, hd)
	checkAttn(dq, dk, dv, dout, docStart, lse, B, T, nh, nkv, hd)
	g := d.attnGeom(B, T, nh, nkv, hd, window)
	_, hpad := flashGeom(T, hd)
	_, _, bwdN := d.flashScratch(B, T, nh, nkv, hd)
	ws := d.scratch16(6, bwdN)
	wsN := bwdN / min(d.threads, B*nkv)
	d.Zero(dk[:B*T*g.kvd])
	d.Zero(dv[:B*T*g.kvd])
	d.dynamicW(B*nkv, func(w, i int) {
		b, kh := i/nkv, i%nkv
		h0 := kh * g.group
		qo, ko := b*T*g.qd+h0*hd, b*T*g.kvd+kh*hd
		if d.flash == 2 || flashShared {
			C.flash_bwd(C.int(d.flash-1), fp(dq[qo:]), fp(dk[ko:]), fp(dv[ko:]), fp(dout[qo:]), fp(out[qo:]), fp(lse[(b*nh+h0)*T:]),
				fp(q[qo:]), fp(k[ko:]), fp(v[ko:]), ip(docStart[b*T:]), C.long(T), C.long(g.qd), C.long(g.kvd),
				C.long(hd), C.long(hpad), C.long(g.group), C.long(window), C.float(g.scale), hp(ws[w*wsN:]))
			return
		}
		C.flash_bwd_avx(fp(dq[qo:]), fp(dk[ko:]), fp(dv[ko:]), fp(dout[qo:]), fp(out[qo:]), fp(lse[(b*nh+h0)*T:]),
			fp(q[qo:]), fp(k[ko:]), fp(v[ko:]), ip(docStart[b*T:]), C.long(T), C.long(g.qd), C.long(g.kvd),
			C.long(hd), C.long(hpad), C.long(g.group), C.long(window), C.float(g.scale), hp(ws[w*wsN:]))
	})
}

// dynamicW is dynamic with each call told which worker (0 .. threads-1)
// runs it, so workers can own scratch.
func (d *Device) dynamicW(tasks int, fn func(w, i int)) {
	workers := min(d.threads, tasks)
	if workers <= 1 {
		for i := range tasks {
			fn(0, i)
		}
		return
	}
	var next, done atomic.Int64
	fin := make(chan struct{})
	work := func(w int) {
		for {
			i := next.Add(1) - 1
			if i >= int64(tasks) {
				return
			}
			fn(w, int(i))
			if done.Add(1) == int64(tasks) {
				close(fin)
			}
		}
	}
	for w := 1; w < workers; w++ {
		go work(w)
	}
	work(0)
	<-fin
}
