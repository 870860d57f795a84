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
