package engine

import (
	"encoding/json"
	"fmt"
	"math"
)

// DBRX (HF DbrxForCausalLM) is the Mixtral-style mixture of experts with a
// different config layout and tensor names, and three differences in the
// math: LayerNorm without bias (norm_1, norm_2, norm_f) instead of RMSNorm;
// the fused query/key/value projection Wqkv, whose output is clamped to
// [-clip_qkv, clip_qkv] when clip_qkv is set; and the chosen experts'
// probabilities divided by their p-norm (moe_normalize_expert_weights;
// none when null) instead of their sum. Its experts are stored fused: w1,
// v1 and w2 are (E·F, C), expert e's rows e·F..(e+1)·F, and w2 is applied
// untransposed (y = h·w2). Its load-balancing loss is HF's
// load_balancing_loss_func applied to the router's probabilities (DbrxFFN
// returns them as "router logits"), so they go through a second softmax.
// ffn_config.moe_jitter_eps (random scaling of the router's input while
// training; 0 in the published configs) is not applied.

// dbrxJSON is DBRX's config.json.
type dbrxJSON struct {
	Architectures      []string `json:"architectures,omitempty"`
	ModelType          string   `json:"model_type"`
	DModel             int      `json:"d_model"`
	NHeads             int      `json:"n_heads"`
	NLayers            int      `json:"n_layers"`
	MaxSeqLen          int      `json:"max_seq_len"`
	VocabSize          int      `json:"vocab_size"`
	ResidPdrop         float64  `json:"resid_pdrop"`
	EmbPdrop           float64  `json:"emb_pdrop"`
	AttnConfig         dbrxAttn `json:"attn_config"`
	FFNConfig          dbrxFFN  `json:"ffn_config"`
	OutputRouterLogits bool     `json:"output_router_logits"`
	TieWordEmbeddings  bool     `json:"tie_word_embeddings"`
	BOSTokenID         TokenIDs `json:"bos_token_id,omitempty"`
	EOSTokenID         TokenIDs `json:"eos_token_id,omitempty"`
	TorchDtype         string   `json:"torch_dtype,omitempty"`
}

type dbrxAttn struct {
	AttnPdrop float64  `json:"attn_pdrop"`
	ClipQKV   *float64 `json:"clip_qkv"`
	KVNHeads  int      `json:"kv_n_heads"`
	RopeTheta float64  `json:"rope_theta"`
}

type dbrxFFN struct {
	FFNActFn      map[string]any `json:"ffn_act_fn"`
	FFNHiddenSize int            `json:"ffn_hidden_size"`
	NumExperts    int            `json:"moe_num_experts"`
	TopK          int            `json:"moe_top_k"`
	JitterEps     *float64       `json:"moe_jitter_eps"`
	LossWeight    float64        `json:"moe_loss_weight"`
	// NormalizeExpertWeights is the p of the p-norm the chosen experts'
	// weights are divided by; null leaves them as they are.
	NormalizeExpertWeights *float64 `json:"moe_normalize_expert_weights"`
}

// dbrxDefaults are HF DbrxConfig's defaults.
func dbrxDefaults() dbrxJSON {
	one := 1.0
	return dbrxJSON{DModel: 2048, NHeads: 16, NLayers: 24, MaxSeqLen: 2048, VocabSize: 32000,
		AttnConfig: dbrxAttn{KVNHeads: 1, RopeTheta: 10000},
		FFNConfig: dbrxFFN{FFNHiddenSize: 3584, NumExperts: 4, TopK: 1, LossWeight: 0.01,
			NormalizeExpertWeights: &one}}
}

// IsDBRX says whether the config is DbrxForCausalLM's.
func (c *Config) IsDBRX() bool { return c.ModelType == "dbrx" }

// parseDBRX maps a DBRX config.json onto Config's fields, keeping the
// original for saving.
func parseDBRX(b []byte) (*Config, error) {
	j := dbrxDefaults()
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("parse config.json: %w", err)
	}
	// Absent sub-objects keep every default, as DbrxConfig's do; a present
	// one is decoded over the defaults above, key by key.
	c := &Config{Architectures: j.Architectures, ModelType: "dbrx", VocabSize: j.VocabSize, HiddenSize: j.DModel,
		IntermediateSize: j.FFNConfig.FFNHiddenSize, NumHiddenLayers: j.NLayers, NumAttentionHeads: j.NHeads,
		NumKeyValueHeads: j.AttnConfig.KVNHeads, RMSNormEps: 1e-5, RopeTheta: j.AttnConfig.RopeTheta,
		MaxPositionEmbeddings: j.MaxSeqLen, TieWordEmbeddings: j.TieWordEmbeddings, HiddenAct: "silu",
		BOSTokenID: j.BOSTokenID, EOSTokenID: j.EOSTokenID, TorchDtype: j.TorchDtype,
		NumLocalExperts: j.FFNConfig.NumExperts, NumExpertsPerTok: j.FFNConfig.TopK,
		RouterAuxLossCoef: j.FFNConfig.LossWeight, OutputRouterLogits: j.OutputRouterLogits,
		ClipQKV: j.AttnConfig.ClipQKV, ExpertNormP: j.FFNConfig.NormalizeExpertWeights}
	if j.NHeads > 0 {
		c.HeadDim = j.DModel / j.NHeads
	}
	if name, ok := j.FFNConfig.FFNActFn["name"]; ok {
		s, _ := name.(string)
		c.HiddenAct = s
	}
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: field %q: %s", ErrUnsupported, field, fmt.Sprintf(format, a...))
	}
	switch {
	case j.ResidPdrop != 0 || j.EmbPdrop != 0 || j.AttnConfig.AttnPdrop != 0:
		return nil, bad("resid_pdrop", "dropout is not supported; set resid_pdrop, emb_pdrop and attn_config.attn_pdrop to 0")
	case c.NumHiddenLayers > 0 && j.DModel%max(j.NHeads, 1) != 0:
		return nil, bad("n_heads", "%d does not divide d_model %d", j.NHeads, j.DModel)
	case c.ClipQKV != nil && !(*c.ClipQKV > 0):
		return nil, bad("attn_config.clip_qkv", "must be positive or null, got %g", *c.ClipQKV)
	case c.ExpertNormP != nil && (!(*c.ExpertNormP > 0) || math.IsInf(*c.ExpertNormP, 0)):
		return nil, bad("ffn_config.moe_normalize_expert_weights", "must be a positive finite p or null, got %g", *c.ExpertNormP)
	}
	c.dbrx = &j
	c.dbrxRaw = append([]byte(nil), b...)
	return c, c.Validate()
}

// dbrxConfigJSON is the config.json a DBRX model is saved with: the one it
// was loaded from, or DBRX's layout rebuilt from the fields.
func (c *Config) dbrxConfigJSON() map[string]any {
	raw := map[string]any{}
	if c.dbrxRaw != nil {
		_ = json.Unmarshal(c.dbrxRaw, &raw)
		return raw
	}
	b, _ := json.Marshal(c.dbrx)
	_ = json.Unmarshal(b, &raw)
	return raw
}

// expertNorm divides the chosen probabilities: their p-norm, 1 when the
// config has none (DBRX's null), the sum for Mixtral.
func (c *Config) expertNorm() (p float64, ok bool) {
	switch {
	case !c.IsDBRX():
		return 1, true
	case c.ExpertNormP == nil:
		return 0, false
	}
	return *c.ExpertNormP, true
}

// dbrxParamSpecs lists DBRX's tensors under HF's names.
func (c *Config) dbrxParamSpecs() []ParamSpec {
	C, F, V, E := c.HiddenSize, c.IntermediateSize, c.VocabSize, c.NumLocalExperts
	var specs specList
	add := specs.add
	add("transformer.wte.weight", true, V, C)
	for l := 0; l < c.NumHiddenLayers; l++ {
		p := c.layerPrefix(l)
		add(p+"norm_attn_norm.norm_1.weight", false, C)
		add(p+"norm_attn_norm.attn.Wqkv.weight", true, c.QDim()+2*c.KVDim(), C)
		add(p+"norm_attn_norm.attn.out_proj.weight", true, C, c.QDim())
		add(p+"norm_attn_norm.norm_2.weight", false, C)
		add(p+"ffn.router.layer.weight", true, E, C)
		for _, m := range []string{"w1", "v1", "w2"} {
			add(p+"ffn.experts.mlp."+m, true, E*F, C)
		}
	}
	add("transformer.norm_f.weight", false, C)
	if !c.TieWordEmbeddings {
		add("lm_head.weight", true, V, C)
	}
	return specs
}

// dbrxLayerViews views one DBRX layer: Wqkv's row blocks are WQ, WK, WV;
// each expert's rows of w1, v1, w2 are its W1, W3 (up) and W2 ((F,C),
// applied untransposed).
func dbrxLayerViews[T float32 | uint16](c *Config, view map[string][]T, p string) Layer[T] {
	C, F, QD, KVD := c.HiddenSize, c.IntermediateSize, c.QDim(), c.KVDim()
	l := Layer[T]{
		LN1: view[p+"norm_attn_norm.norm_1.weight"], LN2: view[p+"norm_attn_norm.norm_2.weight"],
		WO: view[p+"norm_attn_norm.attn.out_proj.weight"], Router: view[p+"ffn.router.layer.weight"],
	}
	// A view of the norms alone (a frozen bf16 base's fp32 arena) has no matrices.
	if qkv := view[p+"norm_attn_norm.attn.Wqkv.weight"]; qkv != nil {
		l.WQ, l.WK, l.WV = qkv[:QD*C:QD*C], qkv[QD*C:(QD+KVD)*C:(QD+KVD)*C], qkv[(QD+KVD)*C:]
	}
	w1, v1, w2 := view[p+"ffn.experts.mlp.w1"], view[p+"ffn.experts.mlp.v1"], view[p+"ffn.experts.mlp.w2"]
	for e := 0; e < c.NumLocalExperts; e++ {
		lo, hi := e*F*C, (e+1)*F*C
		if w1 == nil {
			l.Experts = append(l.Experts, Expert[T]{})
			continue
		}
		l.Experts = append(l.Experts, Expert[T]{W1: w1[lo:hi:hi], W3: v1[lo:hi:hi], W2: w2[lo:hi:hi]})
	}
	return l
}

// norm is the layers' normalisation: LayerNorm without bias for DBRX,
// RMSNorm otherwise (same arguments; see Device).
func (m *Model) norm(out []float32, out16 []uint16, rstd, x, w []float32, n, dim int, eps float32) {
	if m.Config.IsDBRX() {
		m.Dev.LayerNorm(out, out16, rstd, x, w, n, dim, eps)
		return
	}
	m.Dev.RMSNorm(out, out16, rstd, x, w, n, dim, eps)
}

// normBackward is norm's backward; dx16, when non-nil, receives dx's bf16
// cast (fused into RMSNormBackward; LayerNorm's is a pass of its own).
func (m *Model) normBackward(dx []float32, dx16 []uint16, dw, dout, x, w, rstd []float32, n, dim int) {
	if m.Config.IsDBRX() {
		m.Dev.LayerNormBackward(dx, dw, dout, x, w, rstd, n, dim)
		if dx16 != nil {
			m.Dev.ToBF16(dx16, dx[:n*dim])
		}
		return
	}
	m.Dev.RMSNormBackward(dx, dx16, dw, dout, x, w, rstd, n, dim)
}

// clipQKV clamps the n rows of q, k, v to [-clip_qkv, clip_qkv] (DBRX),
// before the rotary embedding, as HF clamps Wqkv's output.
func (m *Model) clipQKV(q, k, v []float32, n int) {
	c := m.Config
	if c.ClipQKV == nil {
		return
	}
	lim := float32(*c.ClipQKV)
	m.Dev.Clamp(q[:n*c.QDim()], lim)
	m.Dev.Clamp(k[:n*c.KVDim()], lim)
	m.Dev.Clamp(v[:n*c.KVDim()], lim)
}

// clipQKVBackward zeroes the gradients dq, dk, dv (before the rotary
// embedding) where the projections (with an adapter on Wqkv, its term
// included) were clamped. The unclamped values are recomputed into tmp
// (N,QD), free at this point of the backward pass, rather than kept: three
// matrix products instead of (N, QD+2·KVD) floats per layer.
func (m *Model) clipQKVBackward(l int, la *layerActs, dq, dk, dv, tmp []float32, n int) {
	c := m.Config
	if c.ClipQKV == nil {
		return
	}
	lim := float32(*c.ClipQKV)
	p, h := &m.Params.Layers[l], m.w16Layer(l)
	C := c.HiddenSize
	x16 := m.cast(m.acts.b16, la.ln1b[:n*C])
	for j, pr := range []struct {
		d, w []float32
		w16  []uint16
		out  int
	}{{dq, p.WQ, h.WQ, c.QDim()}, {dk, p.WK, h.WK, c.KVDim()}, {dv, p.WV, h.WV, c.KVDim()}} {
		pre := tmp[:n*pr.out]
		m.linear(pre, la.ln1b, x16, pr.w, pr.w16, nil, n, C, pr.out, overwrite)
		m.adaptQKVBlock(l, j, pre, la.ln1b, n)
		m.Dev.ClampBackward(pr.d[:n*pr.out], pre, lim)
	}
}
