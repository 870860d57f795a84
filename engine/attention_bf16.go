package engine

import "time"

// BF16Attention is an optional Device capability: Attention and
// AttentionBackward with the same contract, whose matrix products (QKᵀ and
// PV, and the backward's four) take bf16 operands with fp32 accumulation,
// while softmax statistics, the saved log-sum-exp and all outputs stay
// fp32. A model in BF16 mode uses it where the device has it, as its other
// matrix products run in bf16; fp32 mode keeps the fp32 attention.
type BF16Attention interface {
	AttentionBF16(out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int)
	AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int)
}

// attention is Device.Attention, in bf16 products in BF16 mode where the
// device offers them.
func (m *Model) attention(out, lse, q, k, v []float32, docStart []int32, b, t int) {
	c := m.Config
	if ba, ok := m.Dev.(BF16Attention); ok && m.bf16 {
		ba.AttentionBF16(out, lse, q, k, v, docStart, b, t, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.Window())
		return
	}
	m.Dev.Attention(out, lse, q, k, v, docStart, b, t, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.Window())
}

// attentionBackward is attention's backward pass.
func (m *Model) attentionBackward(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, b, t int) {
	c := m.Config
	if ba, ok := m.Dev.(BF16Attention); ok && m.bf16 {
		ba.AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v, docStart, b, t, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.Window())
		return
	}
	m.Dev.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, b, t, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.Window())
}

// AttentionBF16 times the wrapped device's bf16 attention, or its fp32
// attention when it has none, so timing never changes what runs.
func (td *TimedDevice) AttentionBF16(out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int) {
	ba, ok := td.Device.(BF16Attention)
	if !ok {
		td.Attention(out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
		return
	}
	defer td.since("AttentionBF16", time.Now())
	ba.AttentionBF16(out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
}

func (td *TimedDevice) AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int) {
	ba, ok := td.Device.(BF16Attention)
	if !ok {
		td.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
		return
	}
	defer td.since("AttentionBackwardBF16", time.Now())
	ba.AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
}

// BF16AttentionScratch is an optional capability of a BF16Attention
// device: the scratch its bf16 attention alone holds, which can be far
// less than AttentionScratch (the CPU's flash attention keeps O(T) per
// head, its fp32 attention a block of scores per head).
type BF16AttentionScratch interface {
	AttentionScratchBF16(b, t, nh, nkv, hd int) int64
}

// AttentionScratchFor is the attention scratch a model holds on dev: the
// bf16 attention's in BF16 mode where dev runs one, else AttentionScratch.
func AttentionScratchFor(dev Device, bf16 bool, b, t, nh, nkv, hd int) int64 {
	if _, ok := dev.(BF16Attention); ok && bf16 {
		if s, ok := dev.(BF16AttentionScratch); ok {
			return s.AttentionScratchBF16(b, t, nh, nkv, hd)
		}
	}
	return dev.AttentionScratch(b, t, nh, nkv, hd)
}

// AttentionScratchBF16 is the wrapped device's, as AttentionBF16 runs its
// bf16 attention (or its fp32 one where it has none).
func (td *TimedDevice) AttentionScratchBF16(b, t, nh, nkv, hd int) int64 {
	return AttentionScratchFor(td.Device, true, b, t, nh, nkv, hd)
}

// The counting device runs what the device it wraps runs, bf16 attention
// included, so memory tests count the bf16 path a model really takes.
func (c *CountingDevice) AttentionBF16(out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int) {
	if ba, ok := c.Device.(BF16Attention); ok {
		ba.AttentionBF16(out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
		return
	}
	c.Device.Attention(out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
}

func (c *CountingDevice) AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int) {
	if ba, ok := c.Device.(BF16Attention); ok {
		ba.AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
		return
	}
	c.Device.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
}

func (c *CountingDevice) AttentionScratchBF16(b, t, nh, nkv, hd int) int64 {
	return AttentionScratchFor(c.Device, true, b, t, nh, nkv, hd)
}
