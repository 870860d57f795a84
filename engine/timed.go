package engine

import (
	"sort"
	"strconv"
	"time"
)

// TimedDevice wraps a Device and accumulates wall time per method, for
// finding where a training step goes (hone bench train --kernel-times).
type TimedDevice struct {
	Device
	Times map[string]time.Duration
	Calls map[string]int
	// tracked and passes count passes over parameter-sized buffers
	// (passes.go).
	tracked []trackedBuf
	passes  map[string]map[string]float64
}

// NewTimedDevice wraps d.
func NewTimedDevice(d Device) *TimedDevice {
	return &TimedDevice{Device: d, Times: map[string]time.Duration{}, Calls: map[string]int{}}
}

// since records a call that started at start, after waiting for it: a
// device may run kernels asynchronously.
func (t *TimedDevice) since(name string, start time.Time) {
	t.Device.Sync()
	t.Times[name] += time.Since(start)
	t.Calls[name]++
}

// HostMemory forwards the wrapped device's optional extra.
func (t *TimedDevice) HostMemory() bool { return hostAddressable(t.Device) }

// Reset forgets the times so far (e.g. a warm-up step's).
func (t *TimedDevice) Reset() {
	clear(t.Times)
	clear(t.Calls)
	for _, k := range t.passes {
		clear(k)
	}
}

// Report lists methods by total time, largest first.
func (t *TimedDevice) Report() []string {
	names := make([]string, 0, len(t.Times))
	for n := range t.Times {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return t.Times[names[i]] > t.Times[names[j]] })
	var out []string
	for _, n := range names {
		out = append(out, n+": "+t.Times[n].Round(time.Millisecond).String()+" in "+strconv.Itoa(t.Calls[n])+" calls")
	}
	return out
}

func (td *TimedDevice) ToBF16(dst []uint16, src []float32) {
	td.touch("ToBF16", dst, src)
	defer td.since("ToBF16", time.Now())
	td.Device.ToBF16(dst, src)
}

func (td *TimedDevice) MatMul(c, a, b []float32, m, n, k int, f MatMulFlags) {
	td.touch("MatMul", c, a, b)
	defer td.since("MatMul", time.Now())
	td.Device.MatMul(c, a, b, m, n, k, f)
}

func (td *TimedDevice) MatMulW16(c, a []float32, b []uint16, m, n, k int, acc bool) {
	td.touch("MatMulW16", c, a, b)
	defer td.since("MatMulW16", time.Now())
	td.Device.MatMulW16(c, a, b, m, n, k, acc)
}

func (td *TimedDevice) MatMulBF16(c []float32, a, b []uint16, m, n, k int, f MatMulFlags) {
	td.touch("MatMulBF16", c, a, b)
	defer td.since("MatMulBF16", time.Now())
	td.Device.MatMulBF16(c, a, b, m, n, k, f)
}

func (td *TimedDevice) Embedding(out []float32, ids []int32, table []float32, n, dim int) {
	defer td.since("Embedding", time.Now())
	td.Device.Embedding(out, ids, table, n, dim)
}

func (td *TimedDevice) EmbeddingBF16(out []float32, ids []int32, table []uint16, n, dim int) {
	defer td.since("EmbeddingBF16", time.Now())
	td.Device.EmbeddingBF16(out, ids, table, n, dim)
}

func (td *TimedDevice) EmbeddingBackward(dtable []float32, ids []int32, dout []float32, n, dim int) {
	defer td.since("EmbeddingBackward", time.Now())
	td.Device.EmbeddingBackward(dtable, ids, dout, n, dim)
}

func (td *TimedDevice) RMSNorm(out []float32, out16 []uint16, rstd, x, w []float32, n, dim int, eps float32) {
	defer td.since("RMSNorm", time.Now())
	td.Device.RMSNorm(out, out16, rstd, x, w, n, dim, eps)
}

func (td *TimedDevice) RMSNormBackward(dx []float32, dx16 []uint16, dw, dout, x, w, rstd []float32, n, dim int) {
	defer td.since("RMSNormBackward", time.Now())
	td.Device.RMSNormBackward(dx, dx16, dw, dout, x, w, rstd, n, dim)
}

func (td *TimedDevice) AddBias(y, b []float32, n, dim int) {
	defer td.since("AddBias", time.Now())
	td.Device.AddBias(y, b, n, dim)
}

func (td *TimedDevice) BiasBackward(db, dy []float32, n, dim int) {
	defer td.since("BiasBackward", time.Now())
	td.Device.BiasBackward(db, dy, n, dim)
}

func (td *TimedDevice) RoPE(x []float32, pos []int32, cos, sin []float32, n, heads, hd int) {
	defer td.since("RoPE", time.Now())
	td.Device.RoPE(x, pos, cos, sin, n, heads, hd)
}

func (td *TimedDevice) RoPEBackward(dx []float32, pos []int32, cos, sin []float32, n, heads, hd int) {
	defer td.since("RoPEBackward", time.Now())
	td.Device.RoPEBackward(dx, pos, cos, sin, n, heads, hd)
}

func (td *TimedDevice) Attention(out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int) {
	defer td.since("Attention", time.Now())
	td.Device.Attention(out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
}

func (td *TimedDevice) AttentionCached(out, q, kc, vc []float32, start, nq, nh, nkv, hd, window int) {
	defer td.since("AttentionCached", time.Now())
	td.Device.AttentionCached(out, q, kc, vc, start, nq, nh, nkv, hd, window)
}

func (td *TimedDevice) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int) {
	defer td.since("AttentionBackward", time.Now())
	td.Device.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
}

func (td *TimedDevice) SwiGLU(h []float32, h16 []uint16, gate, up []float32, n int) {
	defer td.since("SwiGLU", time.Now())
	td.Device.SwiGLU(h, h16, gate, up, n)
}

func (td *TimedDevice) SwiGLUBackward(dgate, dup []float32, dgate16, dup16 []uint16, dh, gate, up []float32, n int) {
	defer td.since("SwiGLUBackward", time.Now())
	td.Device.SwiGLUBackward(dgate, dup, dgate16, dup16, dh, gate, up, n)
}

func (td *TimedDevice) LayerNorm(out []float32, out16 []uint16, rstd, x, w []float32, n, dim int, eps float32) {
	defer td.since("LayerNorm", time.Now())
	td.Device.LayerNorm(out, out16, rstd, x, w, n, dim, eps)
}

func (td *TimedDevice) LayerNormBackward(dx, dw, dout, x, w, rstd []float32, n, dim int) {
	defer td.since("LayerNormBackward", time.Now())
	td.Device.LayerNormBackward(dx, dw, dout, x, w, rstd, n, dim)
}

func (td *TimedDevice) Clamp(x []float32, lim float32) {
	defer td.since("Clamp", time.Now())
	td.Device.Clamp(x, lim)
}

func (td *TimedDevice) ClampBackward(dx, x []float32, lim float32) {
	defer td.since("ClampBackward", time.Now())
	td.Device.ClampBackward(dx, x, lim)
}

func (td *TimedDevice) GatherRows(out, x []float32, idx []int32, scale []float32, n, dim int) {
	defer td.since("GatherRows", time.Now())
	td.Device.GatherRows(out, x, idx, scale, n, dim)
}

func (td *TimedDevice) ScatterAddRows(x, y []float32, idx []int32, scale []float32, n, dim int) {
	defer td.since("ScatterAddRows", time.Now())
	td.Device.ScatterAddRows(x, y, idx, scale, n, dim)
}

func (td *TimedDevice) RowDots(out, x []float32, idx []int32, y []float32, n, dim int) {
	defer td.since("RowDots", time.Now())
	td.Device.RowDots(out, x, idx, y, n, dim)
}

func (td *TimedDevice) CrossEntropy(dlogits []float32, dlogits16 []uint16, logits []float32, targets []int32, n, vocab int, scale float32) (float64, int) {
	defer td.since("CrossEntropy", time.Now())
	return td.Device.CrossEntropy(dlogits, dlogits16, logits, targets, n, vocab, scale)
}

func (td *TimedDevice) Copy(dst, src []float32) {
	td.touch("Copy", dst, src)
	defer td.since("Copy", time.Now())
	td.Device.Copy(dst, src)
}

func (td *TimedDevice) Zero(x []float32) {
	td.touch("Zero", x)
	defer td.since("Zero", time.Now())
	td.Device.Zero(x)
}

func (td *TimedDevice) SumSquares(x []float32) float64 {
	td.touch("SumSquares", x)
	defer td.since("SumSquares", time.Now())
	return td.Device.SumSquares(x)
}

func (td *TimedDevice) AdamW(p, g, m, v []float32, p16 []uint16, s AdamWStep) {
	td.touch("AdamW", p, g, m, v, p16)
	defer td.since("AdamW", time.Now())
	td.Device.AdamW(p, g, m, v, p16, s)
}

func (td *TimedDevice) LionW(p, g, m []float32, p16 []uint16, s LionWStep) {
	td.touch("LionW", p, g, m, p16)
	defer td.since("LionW", time.Now())
	td.Device.LionW(p, g, m, p16, s)
}
