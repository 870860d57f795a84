package engine

import (
	"encoding/json"
	"fmt"
	"math"
)

// Mixtral's sparse mixture of experts (HF MixtralSparseMoeBlock). In each
// layer the MLP is replaced by E SwiGLU experts and a router: for each token
// the router's logits (E) go through a softmax, the top K experts are kept,
// their probabilities renormalised to sum 1, and the token's output is the
// weighted sum of those K experts' outputs.
//
// The experts run as grouped matrix products: the N·K (token, choice) pairs
// are ordered expert by expert (moeRoute), each expert's tokens gathered
// into consecutive rows, multiplied by its weights, and the weighted
// outputs scattered back into the tokens' rows. No expert sees a token not
// routed to it, so activations are (N·K, F), not (N·E, F).
//
// Routing (softmax, top-k, renormalisation and their backward) runs on the
// host over the downloaded router logits (N,E): it is small, and the group
// sizes must be known on the host to size the matrix products anyway.
//
// Extra legend: E experts (num_local_experts), K experts per token
// (num_experts_per_tok), NK = N·K routed pairs.

// MoE says whether the layers are Mixtral mixtures of experts.
func (c *Config) MoE() bool { return c.NumLocalExperts > 0 }

// routedRows is how many rows the MLP's (rows, F) activations have for n
// tokens: n, or n·K with experts.
func (c *Config) routedRows(n int) int {
	if c.MoE() {
		return n * c.NumExpertsPerTok
	}
	return n
}

// modelType reads only config.json's model_type, to pick the defaults.
func modelType(b []byte) (string, error) {
	var v struct {
		ModelType string `json:"model_type"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return "", fmt.Errorf("parse config.json: %w", err)
	}
	return v.ModelType, nil
}

// mixtralDefaults are HF MixtralConfig's defaults for keys config.json
// leaves out (sliding_window: none).
func mixtralDefaults() Config {
	return Config{RMSNormEps: 1e-5, RopeTheta: 1e6, HiddenAct: "silu", MaxPositionEmbeddings: 4096 * 32,
		NumLocalExperts: 8, NumExpertsPerTok: 2, RouterAuxLossCoef: 0.001}
}

// validateMoE checks the expert keys: only Mixtral has experts.
func (c *Config) validateMoE(bad func(field, format string, a ...any) error) error {
	if c.NumExperts > 0 {
		return bad("num_experts", "this mixture-of-experts layout is not supported; hone trains Mixtral (model_type \"mixtral\", num_local_experts)")
	}
	if c.ModelType != "mixtral" && c.ModelType != "dbrx" {
		if c.NumLocalExperts > 0 {
			return bad("num_local_experts", "mixture-of-experts models are supported only as model_type \"mixtral\" or \"dbrx\", not %q", c.ModelType)
		}
		return nil
	}
	switch {
	case c.NumLocalExperts <= 0:
		return bad("num_local_experts", "must be a positive integer, got %d", c.NumLocalExperts)
	case c.NumExpertsPerTok <= 0 || c.NumExpertsPerTok > c.NumLocalExperts:
		return bad("num_experts_per_tok", "must be in [1, num_local_experts %d], got %d", c.NumLocalExperts, c.NumExpertsPerTok)
	case !(c.RouterAuxLossCoef >= 0) || math.IsInf(c.RouterAuxLossCoef, 0):
		return bad("router_aux_loss_coef", "must be a finite number >= 0, got %g", c.RouterAuxLossCoef)
	case c.RouterJitterNoise != 0:
		return bad("router_jitter_noise", "router jitter is not supported; set it to 0 (got %g)", c.RouterJitterNoise)
	case c.AttentionBias || c.MLPBias:
		return bad("attention_bias", "Mixtral has no biases; remove attention_bias and mlp_bias")
	}
	return nil
}

// moeActs are one layer's saved expert activations besides gate, up and h,
// which layerActs holds with NK rows.
type moeActs struct {
	tok []int32   // (NK) token of each routed pair, expert by expert
	wt  []float32 // (NK) its routing weight
	y   []float32 // (NK,C) expert outputs before weighting
}

// moeScratch is shared by all layers.
type moeScratch struct {
	xg, dxg []float32 // (NK,C) gathered inputs; their gradient (and dy)
	rl      []float32 // (N,E) router logits, then their gradient
	dwt     []float32 // (NK) routing weight gradients
}

func allocMoEActs(d Device, c *Config, N int) moeActs {
	NK := c.routedRows(N)
	return moeActs{tok: d.AllocInt32(NK), wt: d.Alloc(NK), y: d.Alloc(NK * c.HiddenSize)}
}

func allocMoEScratch(d Device, c *Config, N int) moeScratch {
	NK, C := c.routedRows(N), c.HiddenSize
	return moeScratch{xg: d.Alloc(NK * C), dxg: d.Alloc(NK * C), rl: d.Alloc(N * c.NumLocalExperts), dwt: d.Alloc(NK)}
}

// bf16Scratch is the size of each of the two bf16 operand buffers of BF16
// mode: the widest matmul operand, gathered expert rows included. With
// pair (a16 of a full model's training) it also holds the dense MLP
// backward's bf16 casts of dgate and dup together (swigluBackward).
func (c *Config) bf16Scratch(N, chunk, mlpRows int, pair bool) int {
	C, F, QD := c.HiddenSize, c.IntermediateSize, c.QDim()
	rowsF := mlpRows * F
	if pair {
		rowsF *= 2
	}
	return max(N*max(C, QD), c.routedRows(mlpRows)*max(C, F), rowsF, chunk*c.VocabSize)
}

// bf16ScratchB is the length of the second bf16 scratch (b16), which
// holds the inputs of weight gradients besides, never the logits'
// gradient (a16's): the loss chunk's final norm is at most (N,C). A
// frozen dense base without clip_qkv takes no weight gradients, leaving
// the casts of one loss chunk's final norm and of one MLP chunk's h.
func (c *Config) bf16ScratchB(o Options, N, chunk, mlpRows int) int {
	if !o.frozenBase() || c.MoE() || c.ClipQKV != nil {
		return c.bf16Scratch(N, 0, mlpRows, false)
	}
	n := chunk * c.HiddenSize
	if mlpRows < N {
		n = max(n, mlpRows*c.IntermediateSize)
	}
	return n
}

func (a moeActs) free(d Device) {
	if a.tok != nil {
		d.FreeInt32(a.tok)
		freeAll(d, a.wt, a.y)
	}
}

func (s moeScratch) free(d Device) {
	if s.xg != nil {
		freeAll(d, s.xg, s.dxg, s.rl, s.dwt)
	}
}

// sub16 is x[lo:hi], or nil for an absent bf16 operand.
func sub16(x []uint16, lo, hi int) []uint16 {
	if x == nil {
		return nil
	}
	return x[lo:hi]
}

// moeForward adds the expert mixture of layer l's ln2 (N,C) into out,
// routing on the host into acts.routes[l]. x16 is ln2 in bf16 (nil in fp32
// mode).
func (m *Model) moeForward(l int, la *layerActs, x16 []uint16, out []float32, N int) {
	c, d, a := m.Config, m.Dev, m.acts
	p, h := &m.Params.Layers[l], m.w16Layer(l)
	C, E := c.HiddenSize, c.NumLocalExperts
	rl := a.moe.rl[:N*E]
	m.linear(rl, la.ln2, x16, p.Router, h.Router, nil, N, C, E, overwrite)
	m.adapt(l, siteRouter, rl, la.ln2, N)
	r := &a.routes[l]
	r.route(d, rl, c, N)
	NK := len(r.tok)
	d.UploadInt32(la.moe.tok[:NK], r.tok)
	d.Upload(la.moe.wt[:NK], r.wt)
	xg := a.moe.xg[:NK*C]
	d.GatherRows(xg, la.ln2, la.moe.tok, nil, NK, C)
	m.experts(l, r, p, h, xg, m.cast(a.b16, xg), la.gate, la.up, la.h, m.buf16(a.a16, NK*c.IntermediateSize), la.moe.y, linearBF16)
	d.ScatterAddRows(out, la.moe.y, la.moe.tok, la.moe.wt, NK, C)
}

// linearKind picks the weights an expert's products read: the model's
// precision in training, always fp32 in the decoder.
type linearKind bool

const (
	linearBF16 linearKind = false // the model's mode: bf16 operands in BF16 mode
	linearFP32 linearKind = true
)

// experts runs each expert of layer l on its rows of xg (NK,C): gate and
// up (NK,F), h = silu(gate)*up, y = h·W2ᵀ (NK,C), with the attached
// adapter's terms. xg16 and h16 are bf16
// casts (nil in fp32).
func (m *Model) experts(l int, r *moeRoute, p *Layer[float32], h *Layer[uint16], xg []float32, xg16 []uint16, gate, up, hh []float32, h16 []uint16, y []float32, k linearKind) {
	C, F := m.Config.HiddenSize, m.Config.IntermediateSize
	// y(n,out) = x·Wᵀ for W (out,in), or x·W for DBRX's w2 stored (in,out).
	lin := func(y, x []float32, x16 []uint16, w []float32, w16 []uint16, n, in, out int, f MatMulFlags) {
		if k == linearFP32 {
			m.Dev.MatMul(y, x, w, n, out, in, f)
			return
		}
		m.matmul(y, x, x16, w, w16, n, out, in, f)
	}
	down := xWt
	if m.Config.IsDBRX() {
		down = MatMulFlags{}
	}
	for e := range p.Experts {
		o, n := r.off[e], r.off[e+1]-r.off[e]
		if n == 0 {
			continue
		}
		ep, eh := &p.Experts[e], expert16(h, e)
		x, x16 := xg[o*C:(o+n)*C], sub16(xg16, o*C, (o+n)*C)
		lin(gate[o*F:(o+n)*F], x, x16, ep.W1, eh.W1, n, C, F, xWt)
		lin(up[o*F:(o+n)*F], x, x16, ep.W3, eh.W3, n, C, F, xWt)
		m.adaptExpert(l, e, expW1, gate[o*F:(o+n)*F], x, n)
		m.adaptExpert(l, e, expW3, up[o*F:(o+n)*F], x, n)
	}
	NK := len(r.tok)
	m.Dev.SwiGLU(hh[:NK*F], h16, gate[:NK*F], up[:NK*F], NK*F)
	for e := range p.Experts {
		o, n := r.off[e], r.off[e+1]-r.off[e]
		if n == 0 {
			continue
		}
		lin(y[o*C:(o+n)*C], hh[o*F:(o+n)*F], sub16(h16, o*F, (o+n)*F), p.Experts[e].W2, expert16(h, e).W2, n, F, C, down)
		m.adaptExpert(l, e, expW2, y[o*C:(o+n)*C], hh[o*F:(o+n)*F], n)
	}
}

// expert16 is expert e's bf16 weights, empty in fp32 mode.
func expert16(h *Layer[uint16], e int) *Expert[uint16] {
	if h.Experts == nil {
		return &Expert[uint16]{}
	}
	return &h.Experts[e]
}

// moeBackward propagates dres (the gradient w.r.t. the layer's output)
// through the experts and the routing into scr.dln (overwritten) as the
// gradient w.r.t. ln2, adding the experts' and the router's gradients.
func (m *Model) moeBackward(l int, la *layerActs, dres []float32, N int) {
	c, d, a := m.Config, m.Dev, m.acts
	p, h, g, s := &m.Params.Layers[l], m.w16Layer(l), &m.Grads.Layers[l], &a.scr
	C, F, E := c.HiddenSize, c.IntermediateSize, c.NumLocalExperts
	r := &a.routes[l]
	NK := len(r.tok)
	tok, dwt := la.moe.tok[:NK], a.moe.dwt[:NK]
	// out = mid + Σ wt·y: dy = wt·dres[tok], dwt = dres[tok]·y.
	d.RowDots(dwt, dres, tok, la.moe.y, NK, C)
	dy := a.moe.dxg[:NK*C]
	d.GatherRows(dy, dres, tok, la.moe.wt, NK, C)
	xg := a.moe.xg[:NK*C]
	d.GatherRows(xg, la.ln2, tok, nil, NK, C)
	for e := range p.Experts {
		o, n := r.off[e], r.off[e+1]-r.off[e]
		if n == 0 {
			continue
		}
		m.downBackward(s.dh[o*F:(o+n)*F], g.Experts[e].W2, dy[o*C:(o+n)*C], la.h[o*F:(o+n)*F], p.Experts[e].W2, expert16(h, e).W2, n)
		m.adaptExpertBackward(l, e, expW2, s.dh[o*F:(o+n)*F], dy[o*C:(o+n)*C], la.h[o*F:(o+n)*F], n)
	}
	d.SwiGLUBackward(s.dgate[:NK*F], s.dup[:NK*F], nil, nil, s.dh[:NK*F], la.gate[:NK*F], la.up[:NK*F], NK*F)
	dxg := a.moe.dxg[:NK*C] // dy is spent
	for e := range p.Experts {
		o, n := r.off[e], r.off[e+1]-r.off[e]
		if n == 0 {
			continue
		}
		x, dx := xg[o*C:(o+n)*C], dxg[o*C:(o+n)*C]
		m.linearBackward(dx, g.Experts[e].W1, nil, s.dgate[o*F:(o+n)*F], x, p.Experts[e].W1, expert16(h, e).W1, n, C, F, overwrite)
		m.linearBackward(dx, g.Experts[e].W3, nil, s.dup[o*F:(o+n)*F], x, p.Experts[e].W3, expert16(h, e).W3, n, C, F, accumulate)
		m.adaptExpertBackward(l, e, expW1, dx, s.dgate[o*F:(o+n)*F], x, n)
		m.adaptExpertBackward(l, e, expW3, dx, s.dup[o*F:(o+n)*F], x, n)
	}
	dln := s.dln[:N*C]
	d.Zero(dln)
	d.ScatterAddRows(dln, dxg, tok, nil, NK, C)
	// The routing weights' gradient, through renormalisation and softmax,
	// to the router logits, then through the router.
	drl := a.moe.rl[:N*E]
	r.backward(d, drl, dwt, a.auxGrad)
	m.linearBackward(dln, g.Router, nil, drl, la.ln2, p.Router, h.Router, N, C, E, accumulate)
	m.adaptBackward(l, siteRouter, dln, drl, la.ln2, N)
}

// moeStep holds the decoder's expert buffers for up to n tokens.
type moeStep struct {
	acts  moeActs
	xg    []float32 // (NK,C)
	rl    []float32 // (n,E)
	route moeRoute
}

func allocMoEStep(d Device, c *Config, n int) moeStep {
	return moeStep{acts: allocMoEActs(d, c, n), xg: d.Alloc(c.routedRows(n) * c.HiddenSize), rl: d.Alloc(n * c.NumLocalExperts)}
}

func (s *moeStep) free(d Device) {
	if s.xg != nil {
		s.acts.free(d)
		freeAll(d, s.xg, s.rl)
	}
	*s = moeStep{}
}

// moeDecode adds layer l's (p's) expert mixture of the n rows of b.ln into
// b.x, with the fp32 weights and the attached adapter's terms, as
// moeForward does in training.
func (m *Model) moeDecode(b *stepBufs, l int, p *Layer[float32], n int) {
	c, d, s := m.Config, m.Dev, &b.moe
	C, E := c.HiddenSize, c.NumLocalExperts
	m.linearDec(s.rl[:n*E], b.ln[:n*C], p.Router, nil, nil, n, C, E, overwrite)
	m.adapt(l, siteRouter, s.rl[:n*E], b.ln[:n*C], n)
	r := &s.route
	r.route(d, s.rl[:n*E], c, n)
	NK := len(r.tok)
	d.UploadInt32(s.acts.tok[:NK], r.tok)
	d.Upload(s.acts.wt[:NK], r.wt)
	xg := s.xg[:NK*C]
	d.GatherRows(xg, b.ln, s.acts.tok, nil, NK, C)
	m.experts(l, r, p, &Layer[uint16]{}, xg, nil, b.gate, b.up, b.h, nil, s.acts.y, linearFP32)
	d.ScatterAddRows(b.x, s.acts.y, s.acts.tok, s.acts.wt, NK, C)
}

// ActiveParams counts the parameters one token's forward pass uses: all of
// them, less the experts the router does not pick (for FLOP counts).
func (c *Config) ActiveParams() int64 {
	n := c.NumParams()
	if c.MoE() {
		idle := int64(c.NumLocalExperts-c.NumExpertsPerTok) * 3 * int64(c.HiddenSize) * int64(c.IntermediateSize)
		n -= idle * int64(c.NumHiddenLayers)
	}
	return n
}

// downBackward is the backward of an expert's down projection y(n,C) from
// h(n,F): dh = dy·W2 and dW2 += dyᵀ·h for Mixtral's W2 (C,F); for DBRX's
// untransposed w2 (F,C), dh = dy·W2ᵀ and dW2 += hᵀ·dy.
func (m *Model) downBackward(dh, dw, dy, h, w []float32, w16 []uint16, n int) {
	if !m.Config.IsDBRX() {
		m.linearBackward(dh, dw, nil, dy, h, w, w16, n, m.Config.IntermediateSize, m.Config.HiddenSize, overwrite)
		return
	}
	C, F, a := m.Config.HiddenSize, m.Config.IntermediateSize, m.acts
	dy16 := m.cast(a.a16, dy[:n*C])
	m.matmul(dh, dy, dy16, w, w16, n, F, C, xWt)
	if m.frozen() {
		return
	}
	m.matmul(dw, h, m.cast(a.b16, h[:n*F]), dy, dy16, F, C, n, MatMulFlags{TransA: true, Acc: true})
}
