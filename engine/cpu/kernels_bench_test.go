package cpu

import (
	"math/rand/v2"
	"testing"

	"hone/engine"
)

// Kernel benchmarks at the shapes of the 125M bench model (seq 256 × batch
// 4, hidden 768, 12 heads / 4 kv heads, intermediate 2048, vocab 32000).
const (
	benchN, benchC, benchF, benchV   = 1024, 768, 2048, 32000
	benchB, benchT, benchNH, benchKV = 4, 256, 12, 4
	benchHD                          = 64
)

func BenchmarkAttentionForward(b *testing.B) {
	d, r := New(0), rand.New(rand.NewPCG(1, 1))
	q, k, v := randSlice(r, benchN*benchNH*benchHD), randSlice(r, benchN*benchKV*benchHD), randSlice(r, benchN*benchKV*benchHD)
	out, lse, ds := make([]float32, len(q)), make([]float32, benchB*benchNH*benchT), make([]int32, benchN)
	for _, prec := range []string{"fp32", "bf16"} {
		b.Run(prec, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if prec == "bf16" {
					d.AttentionBF16(out, lse, q, k, v, ds, benchB, benchT, benchNH, benchKV, benchHD, 0)
				} else {
					d.Attention(out, lse, q, k, v, ds, benchB, benchT, benchNH, benchKV, benchHD, 0)
				}
			}
		})
	}
}

func BenchmarkAttentionBackward(b *testing.B) {
	d, r := New(0), rand.New(rand.NewPCG(1, 1))
	q, k, v := randSlice(r, benchN*benchNH*benchHD), randSlice(r, benchN*benchKV*benchHD), randSlice(r, benchN*benchKV*benchHD)
	out, lse, ds := make([]float32, len(q)), make([]float32, benchB*benchNH*benchT), make([]int32, benchN)
	d.Attention(out, lse, q, k, v, ds, benchB, benchT, benchNH, benchKV, benchHD, 0)
	dout := randSlice(r, len(q))
	dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
	for _, prec := range []string{"fp32", "bf16"} {
		b.Run(prec, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if prec == "bf16" {
					d.AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v, ds, benchB, benchT, benchNH, benchKV, benchHD, 0)
				} else {
					d.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, ds, benchB, benchT, benchNH, benchKV, benchHD, 0)
				}
			}
		})
	}
}

func BenchmarkCrossEntropy(b *testing.B) {
	d, r := New(0), rand.New(rand.NewPCG(1, 1))
	const n = 256
	logits := randSlice(r, n*benchV)
	targets := make([]int32, n)
	for i := range targets {
		targets[i] = int32(r.IntN(benchV))
	}
	dl := make([]float32, len(logits))
	b.SetBytes(int64(4 * len(logits)))
	for i := 0; i < b.N; i++ {
		d.CrossEntropy(dl, nil, logits, targets, n, benchV, 1)
	}
}

func BenchmarkSwiGLU(b *testing.B) {
	d, r := New(0), rand.New(rand.NewPCG(1, 1))
	g, u, h := randSlice(r, benchN*benchF), randSlice(r, benchN*benchF), make([]float32, benchN*benchF)
	b.SetBytes(int64(12 * len(h)))
	for i := 0; i < b.N; i++ {
		d.SwiGLU(h, nil, g, u, len(h))
	}
}

func BenchmarkRMSNormBackward(b *testing.B) {
	d, r := New(0), rand.New(rand.NewPCG(1, 1))
	x, w, dout := randSlice(r, benchN*benchC), randSlice(r, benchC), randSlice(r, benchN*benchC)
	out, rstd, dx, dw := make([]float32, len(x)), make([]float32, benchN), make([]float32, len(x)), make([]float32, benchC)
	d.RMSNorm(out, nil, rstd, x, w, benchN, benchC, 1e-5)
	for i := 0; i < b.N; i++ {
		d.RMSNormBackward(dx, nil, dw, dout, x, w, rstd, benchN, benchC)
	}
}

func BenchmarkAdamW(b *testing.B) {
	d, r := New(0), rand.New(rand.NewPCG(1, 1))
	const n = 16 << 20
	p, g := randSlice(r, n), randSlice(r, n)
	m, v, p16 := make([]float32, n), make([]float32, n), make([]uint16, n)
	b.SetBytes(4*7*n + 2*n)
	for i := 0; i < b.N; i++ {
		d.AdamW(p, g, m, v, p16, engine.AdamWStep{LR: 1e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: i + 1})
	}
}

// The bf16 casts fused into their producers against the producer and a
// ToBF16 pass after it, as the layers ran them before: "go test
// ./engine/cpu -run '^$' -bench 'Cast/'".
func BenchmarkCast(b *testing.B) {
	d, r := New(0), rand.New(rand.NewPCG(1, 1))
	nf := benchN * benchF
	g, u, dh := randSlice(r, nf), randSlice(r, nf), randSlice(r, nf)
	dg, du, dg16, du16 := make([]float32, nf), make([]float32, nf), make([]uint16, nf), make([]uint16, nf)
	for _, fused := range []bool{false, true} {
		b.Run(map[bool]string{false: "SwiGLUBackward/separate", true: "SwiGLUBackward/fused"}[fused], func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if fused {
					d.SwiGLUBackward(dg, du, dg16, du16, dh, g, u, nf)
				} else {
					d.SwiGLUBackward(dg, du, nil, nil, dh, g, u, nf)
					d.ToBF16(dg16, dg)
					d.ToBF16(du16, du)
				}
			}
		})
	}
	const n = 256
	logits := randSlice(r, n*benchV)
	targets := make([]int32, n)
	for i := range targets {
		targets[i] = int32(r.IntN(benchV))
	}
	scratch, dl16 := make([]float32, len(logits)), make([]uint16, len(logits))
	for _, fused := range []bool{false, true} {
		b.Run(map[bool]string{false: "CrossEntropy/separate", true: "CrossEntropy/fused"}[fused], func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				copy(scratch, logits) // the gradient overwrites the logits in place, as in the head
				if fused {
					d.CrossEntropy(scratch, dl16, scratch, targets, n, benchV, 1)
				} else {
					d.CrossEntropy(scratch, nil, scratch, targets, n, benchV, 1)
					d.ToBF16(dl16, scratch)
				}
			}
		})
	}
}
