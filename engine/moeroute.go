package engine

import (
	"math"
	"slices"
)

// moeRoute is one layer's routing of N tokens over E experts, K each, kept
// on the host for the backward pass. Probabilities are float64: they come
// from fp32 logits, and the renormalisation and softmax backward lose
// nothing to rounding here.
type moeRoute struct {
	n, e, k int
	// The chosen probabilities are divided by their normP-norm (1: their
	// sum, Mixtral), or not at all without norm (DBRX's null). auxSoftmax:
	// the aux loss sees the probabilities through a second softmax (DBRX).
	normP            float64
	norm, auxSoftmax bool
	logits           []float32 // (N,E) host copy of the router logits; reused for their gradient
	probs            []float64 // (N,E) softmax of the logits
	pick             []int32   // (N,K) chosen experts, most probable first
	sel              []float64 // (N) the chosen probabilities' norm S (1 without normalisation)
	// The N·K (token, choice) pairs ordered expert by expert (tokens
	// ascending within an expert): pair i is token tok[i]'s choice src[i]%K,
	// weighted wt[i]; expert e's pairs are [off[e], off[e+1]).
	tok []int32
	wt  []float32
	src []int32
	off []int
	dw  []float64 // (N,K) routing weight gradients, by choice
}

// route downloads the router logits rl (N,E) and routes: softmax, top K,
// the K probabilities divided by their norm (their sum for Mixtral, HF
// MixtralSparseMoeBlock; the p-norm for DBRX, HF DbrxRouter).
func (r *moeRoute) route(d Device, rl []float32, c *Config, N int) {
	E, K := c.NumLocalExperts, c.NumExpertsPerTok
	r.size(N, E, K)
	r.normP, r.norm = c.expertNorm()
	r.auxSoftmax = c.IsDBRX()
	d.Download(r.logits, rl)
	for t := 0; t < N; t++ {
		p := r.probs[t*E : (t+1)*E]
		softmax64(p, r.logits[t*E:(t+1)*E])
		pick := r.pick[t*K : (t+1)*K]
		topK(pick, p)
		r.sel[t] = 1
		if r.norm {
			var s float64
			for _, e := range pick {
				s += math.Pow(p[e], r.normP)
			}
			r.sel[t] = math.Pow(s, 1/r.normP)
		}
	}
	counts := make([]int, E+1)
	for _, e := range r.pick {
		counts[e+1]++
	}
	for e := 0; e < E; e++ {
		r.off[e+1] = r.off[e] + counts[e+1]
	}
	next := append([]int(nil), r.off[:E]...)
	for t := 0; t < N; t++ {
		for j, e := range r.pick[t*K : (t+1)*K] {
			i := next[e]
			next[e]++
			r.tok[i], r.src[i] = int32(t), int32(t*K+j)
			r.wt[i] = float32(r.probs[t*E+int(e)] / r.sel[t])
		}
	}
}

func (r *moeRoute) size(N, E, K int) {
	r.n, r.e, r.k = N, E, K
	if cap(r.probs) < N*E {
		r.logits, r.probs = make([]float32, N*E), make([]float64, N*E)
	}
	if cap(r.pick) < N*K {
		r.pick, r.tok, r.src = make([]int32, N*K), make([]int32, N*K), make([]int32, N*K)
		r.wt, r.dw = make([]float32, N*K), make([]float64, N*K)
	}
	if cap(r.sel) < N {
		r.sel = make([]float64, N)
	}
	r.logits, r.probs, r.sel = r.logits[:N*E], r.probs[:N*E], r.sel[:N]
	r.pick, r.tok, r.src, r.wt, r.dw = r.pick[:N*K], r.tok[:N*K], r.src[:N*K], r.wt[:N*K], r.dw[:N*K]
	if len(r.off) != E+1 {
		r.off = make([]int, E+1)
	}
}

// softmax64 writes softmax(x) into p in float64.
func softmax64(p []float64, x []float32) {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for i, v := range x {
		p[i] = math.Exp(float64(v) - mx)
		s += p[i]
	}
	for i := range p {
		p[i] /= s
	}
}

// topK writes the indices of the len(pick) largest p, largest first; ties
// go to the lower index. K passes over E: both are small, and it allocates
// nothing (it runs for every token of every layer).
func topK(pick []int32, p []float64) {
	for j := range pick {
		best := -1
		for e, v := range p {
			if (best < 0 || v > p[best]) && !slices.Contains(pick[:j], int32(e)) {
				best = e
			}
		}
		pick[j] = int32(best)
	}
}

// backward downloads the routing weights' gradient dwt (NK, in pair order)
// and writes the router logits' gradient into drl (N,E) on the device.
// auxGrad (E), when non-nil, is the load-balancing loss's gradient with
// respect to every token's probability of each expert.
//
// With S = (Σ_j p_j^P)^(1/P) the P-norm of the chosen probabilities and
// w_j = p_j/S: dL/dp_s = (dw_s − Σ_j dw_j·w_j · p_s^(P−1)·S^(1−P))/S for a
// chosen s (P = 1: (dw_s − Σ_j dw_j·w_j)/S; no normalisation: dw_s), and
// the softmax backward dL/dx_e = p_e·(dL/dp_e − Σ_f p_f·dL/dp_f).
func (r *moeRoute) backward(d Device, drl, dwt []float32, auxGrad []float64) {
	N, E, K := r.n, r.e, r.k
	host := make([]float32, len(dwt))
	d.Download(host, dwt)
	for i, s := range r.src {
		r.dw[s] = float64(host[i])
	}
	dp := make([]float64, E)
	for t := 0; t < N; t++ {
		p := r.probs[t*E : (t+1)*E]
		r.auxBackward(dp, p, auxGrad)
		pick, dw, S := r.pick[t*K:(t+1)*K], r.dw[t*K:(t+1)*K], r.sel[t]
		var dot float64
		for j, e := range pick {
			dot += dw[j] * p[e] / S
		}
		for j, e := range pick {
			ds := 0.0
			if r.norm {
				ds = dot * math.Pow(p[e], r.normP-1) * math.Pow(S, 1-r.normP)
			}
			dp[e] += (dw[j] - ds) / S
		}
		var pd float64
		for e := range p {
			pd += p[e] * dp[e]
		}
		g := r.logits[t*E : (t+1)*E]
		for e := range g {
			g[e] = float32(p[e] * (dp[e] - pd))
		}
	}
	d.Upload(drl, r.logits)
}

// routerAuxLoss is HF's load_balancing_loss_func over every layer's
// routing of this batch (all N tokens; hone batches have no padding rows
// to mask), times router_aux_loss_coef:
//
//	aux = E · Σ_e f_e·P_e, f_e = picks of e / (L·N), P_e = mean over layers
//	and tokens of the probability of e.
//
// It returns coef·aux·(scored tokens) to add to the loss sum, and
// sets acts.auxGrad to weight·coef·∂aux/∂p (the picks are constants). The
// weight is scale·(scored tokens), so one micro-batch's loss is the mean
// cross-entropy plus coef·aux exactly as in HF, and micro-batches of an
// accumulated step weigh their aux losses by their share of the scored
// tokens. Zero (and no gradient) without output_router_logits.
func (m *Model) routerAuxLoss(scale float32, scored int) float64 {
	c, a := m.Config, m.acts
	a.auxGrad = nil
	if !c.MoE() || !c.OutputRouterLogits || c.RouterAuxLossCoef == 0 || scored == 0 {
		return 0
	}
	E := c.NumLocalExperts
	picks, probs := make([]float64, E), make([]float64, E)
	var rows float64
	for _, r := range a.routes {
		rows += float64(r.n)
		for _, e := range r.pick {
			picks[e]++
		}
		for t := 0; t < r.n; t++ {
			p := r.probs[t*E : (t+1)*E]
			if r.auxSoftmax {
				p = softmaxOf(p) // DBRX: the aux loss sees softmax(probabilities)
			}
			for e, v := range p {
				probs[e] += v
			}
		}
	}
	var aux float64
	grad := make([]float64, E)
	w := float64(scale) * float64(scored) * c.RouterAuxLossCoef
	for e := range picks {
		aux += float64(E) * picks[e] / rows * probs[e] / rows
		grad[e] = w * float64(E) * picks[e] / rows / rows
	}
	a.auxGrad = grad
	return c.RouterAuxLossCoef * aux * float64(scored)
}

// auxBackward sets dp (E) to the aux loss's gradient with respect to one
// token's probabilities p: auxGrad itself, or for DBRX, whose aux loss
// sees q = softmax(p), auxGrad through that softmax. nil: zero.
func (r *moeRoute) auxBackward(dp, p, auxGrad []float64) {
	clear(dp)
	switch {
	case auxGrad == nil:
	case !r.auxSoftmax:
		copy(dp, auxGrad)
	default:
		q := softmaxOf(p)
		var qg float64
		for e := range q {
			qg += q[e] * auxGrad[e]
		}
		for e := range dp {
			dp[e] = q[e] * (auxGrad[e] - qg)
		}
	}
}

// softmaxOf is softmax(p) of float64s.
func softmaxOf(p []float64) []float64 {
	mx := math.Inf(-1)
	for _, v := range p {
		mx = math.Max(mx, v)
	}
	q := make([]float64, len(p))
	var s float64
	for i, v := range p {
		q[i] = math.Exp(v - mx)
		s += q[i]
	}
	for i := range q {
		q[i] /= s
	}
	return q
}
