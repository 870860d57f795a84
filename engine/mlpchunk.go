package engine

// DefaultMLPChunk is Options.MLPChunk's default: rows enough for the
// matmuls to run at full speed, few enough that the (rows, intermediate)
// buffers stay small beside the per-token activations at long context.
const DefaultMLPChunk = 2048

// shareMLPInputs says whether the layers keep no SwiGLU output h and no
// second norm's output ln2 for the backward pass: a frozen base (no weight
// gradients read them) without recomputation, dense, with the query width
// at least the hidden size (ln2 lives in dq's scratch). The backward pass
// recomputes both, an elementwise pass and a norm per layer, into scratch
// that is dead at that point: (N,F)+(N,C) floats a layer less memory.
func (o Options) shareMLPInputs(c *Config) bool {
	return o.frozenBase() && !o.Recompute && !c.MoE() && c.QDim() >= c.HiddenSize
}

// mlpRows is how many token rows of a batch of N the dense MLP's
// (rows, intermediate) buffers and ln2 hold. Without recomputation the
// backward pass needs every layer's, so all N. With it, the backward pass
// recomputes the MLP's ln2, gate, up and h chunk by chunk from mid, so
// only Options.MLPChunk rows exist at once: the MLP's working memory stops
// growing with the context. Experts keep their routed rows. LoRA dropout
// draws each row's mask from the row's index in the batch, so a chunk
// draws the masks the whole batch would (dropout.row0).
func (o Options) mlpRows(c *Config, N int) int {
	if !o.Recompute || c.MoE() {
		return N
	}
	ch := o.MLPChunk
	if ch <= 0 {
		ch = DefaultMLPChunk
	}
	return min(N, ch)
}

// mlpChunked reports whether the MLP buffers hold fewer than n rows, so
// the MLP runs in chunks (dense models only).
func (m *Model) mlpChunked(la *layerActs, n int) bool {
	return !m.Config.MoE() && len(la.gate) < n*m.Config.IntermediateSize
}

// mlpChunkForward computes out += down(silu(gate(ln2))·up(ln2)) for the
// N rows of layer l, rows chunk rows at a time, ln2 = norm(mid) too. In
// the backward pass's recomputation it does nothing: out is already known
// there, and mlpChunkBackward recomputes each chunk.
func (m *Model) mlpChunkForward(l int, p *Layer[float32], h *Layer[uint16], la *layerActs, out []float32, N int) {
	if m.recomputing {
		return
	}
	C, F := m.Config.HiddenSize, m.Config.IntermediateSize
	rows := len(la.gate) / F
	defer m.dropRows(0)
	for s0 := 0; s0 < N; s0 += rows {
		m.dropRows(s0)
		n := min(rows, N-s0)
		xc := m.buf16(m.acts.a16, n*C) // the norm writes ln2's bf16 cast here
		m.norm2(p, la, xc, s0, n)
		hh, h16 := m.mlpChunkInner(l, p, h, la, xc, n, true)
		y := out[s0*C : (s0+n)*C]
		m.linear(y, hh, h16, p.WDown, h.WDown, p.BDown, n, F, C, accumulate)
		m.adapt(l, projDown, y, hh, n)
	}
}

// norm2 is the layer's (p's) second norm of rows s0..s0+n (from mid) into ln2's
// first n rows and their rstd2, and into x16 when not nil.
func (m *Model) norm2(p *Layer[float32], la *layerActs, x16 []uint16, s0, n int) {
	C := m.Config.HiddenSize
	m.norm(la.ln2[:n*C], x16, la.rstd2[s0:s0+n], la.mid[s0*C:(s0+n)*C], p.LN2, n, C, float32(m.Config.RMSNormEps))
}

// mlpChunkInner computes gate, up and h of the chunk of n rows whose ln2
// is in la.ln2 into the first n rows of la's buffers and returns h (and
// its bf16 cast when cast is set, in b16: a16 holds ln2's cast meanwhile).
func (m *Model) mlpChunkInner(l int, p *Layer[float32], h *Layer[uint16], la *layerActs, xc []uint16, n int, cast bool) ([]float32, []uint16) {
	C, F := m.Config.HiddenSize, m.Config.IntermediateSize
	ln := la.ln2[:n*C]
	gate, up, hh := la.gate[:n*F], la.up[:n*F], la.h[:n*F]
	m.linear(gate, ln, xc, p.WGate, h.WGate, p.BGate, n, C, F, overwrite)
	m.linear(up, ln, xc, p.WUp, h.WUp, p.BUp, n, C, F, overwrite)
	m.adapt(l, projGate, gate, ln, n)
	m.adapt(l, projUp, up, ln, n)
	var h16 []uint16
	if cast {
		h16 = m.buf16(m.acts.b16, n*F)
	}
	m.Dev.SwiGLU(hh, h16, gate, up, n*F)
	return hh, h16
}

// mlpChunkBackward is the MLP branch of layerBackward in chunks: for each
// chunk of rows it recomputes ln2 (and rstd2), gate, up and h from mid and
// propagates dres into scr.dln (overwritten) and the gradients.
func (m *Model) mlpChunkBackward(l int, p *Layer[float32], h *Layer[uint16], g *Layer[float32], la *layerActs, dres []float32, N int) {
	C, F := m.Config.HiddenSize, m.Config.IntermediateSize
	s := &m.acts.scr
	rows := len(la.gate) / F
	fresh := m.gradFresh // only the first chunk overwrites the gradients
	defer func() { m.gradFresh = fresh; m.dropRows(0) }()
	for s0 := 0; s0 < N; s0 += rows {
		m.gradFresh = fresh && s0 == 0
		m.dropRows(s0)
		n := min(rows, N-s0)
		m.norm2(p, la, nil, s0, n)
		ln := la.ln2[:n*C]
		hh, _ := m.mlpChunkInner(l, p, h, la, m.cast(m.acts.a16, ln), n, false)
		dy, dln := dres[s0*C:(s0+n)*C], s.dln[s0*C:(s0+n)*C]
		dh, dgate, dup := s.dh[:n*F], s.dgate[:n*F], s.dup[:n*F]
		m.linearBackward(dh, g.WDown, g.BDown, dy, hh, p.WDown, h.WDown, n, F, C, overwrite)
		m.adaptBackward(l, projDown, dh, dy, hh, n)
		dg16, du16 := m.swigluBackward(dgate, dup, dh, la.gate, la.up, n*F)
		x16 := m.linearBackward16(dln, g.WGate, g.BGate, dgate, dg16, ln, nil, p.WGate, h.WGate, n, C, F, overwrite)
		m.linearBackward16(dln, g.WUp, g.BUp, dup, du16, ln, x16, p.WUp, h.WUp, n, C, F, accumulate)
		m.adaptBackward(l, projGate, dln, dgate, ln, n)
		m.adaptBackward(l, projUp, dln, dup, ln, n)
	}
}
