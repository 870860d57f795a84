package engine

import (
	"fmt"
	"strings"
)

// ParamSpec names one parameter tensor as Hugging Face does and gives its
// shape and place in the parameter arena.
type ParamSpec struct {
	Name   string
	Shape  []int
	Offset int  // into the arena, in elements
	Decay  bool // weight decay applies (matrices); norms and biases are excluded
}

// Size is the number of elements.
func (s ParamSpec) Size() int {
	n := 1
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// specList builds a ParamSpecs list, each spec placed after the last.
type specList []ParamSpec

func (l *specList) add(name string, decay bool, shape ...int) {
	off := 0
	if n := len(*l); n > 0 {
		off = (*l)[n-1].Offset + (*l)[n-1].Size()
	}
	*l = append(*l, ParamSpec{Name: name, Shape: shape, Offset: off, Decay: decay})
}

// ParamSpecs lists every parameter in arena order, with offsets filled.
func (c *Config) ParamSpecs() []ParamSpec {
	if c.IsDBRX() {
		return c.dbrxParamSpecs()
	}
	C, F, V, Q, KV := c.HiddenSize, c.IntermediateSize, c.VocabSize, c.QDim(), c.KVDim()
	var specs specList
	add := specs.add
	add("model.embed_tokens.weight", true, V, C)
	for l := 0; l < c.NumHiddenLayers; l++ {
		p := c.layerPrefix(l)
		add(p+"input_layernorm.weight", false, C)
		for _, pr := range []struct {
			n   string
			out int
		}{{"q_proj", Q}, {"k_proj", KV}, {"v_proj", KV}} {
			add(p+"self_attn."+pr.n+".weight", true, pr.out, C)
			if c.AttentionBias {
				add(p+"self_attn."+pr.n+".bias", false, pr.out)
			}
		}
		add(p+"self_attn.o_proj.weight", true, C, Q)
		if c.AttentionBias {
			add(p+"self_attn.o_proj.bias", false, C)
		}
		add(p+"post_attention_layernorm.weight", false, C)
		if c.MoE() {
			add(p+"block_sparse_moe.gate.weight", true, c.NumLocalExperts, C)
			for e := 0; e < c.NumLocalExperts; e++ {
				q := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", p, e)
				add(q+"w1.weight", true, F, C)
				add(q+"w2.weight", true, C, F)
				add(q+"w3.weight", true, F, C)
			}
			continue
		}
		add(p+"mlp.gate_proj.weight", true, F, C)
		if c.MLPBias {
			add(p+"mlp.gate_proj.bias", false, F)
		}
		add(p+"mlp.up_proj.weight", true, F, C)
		if c.MLPBias {
			add(p+"mlp.up_proj.bias", false, F)
		}
		add(p+"mlp.down_proj.weight", true, C, F)
		if c.MLPBias {
			add(p+"mlp.down_proj.bias", false, C)
		}
	}
	add("model.norm.weight", false, C)
	if !c.TieWordEmbeddings {
		add("lm_head.weight", true, V, C)
	}
	return specs
}

// Layer holds views of one decoder layer's tensors inside an arena. The same
// struct serves parameters, their gradients and (with T = uint16) their bf16
// copies. Bias views are nil when the config has no biases.
type Layer[T float32 | uint16] struct {
	LN1        []T // (C)
	WQ, WK, WV []T // (QD,C) (KVD,C) (KVD,C)
	BQ, BK, BV []T // (QD) (KVD) (KVD)
	WO         []T // (C,QD)
	BO         []T // (C)
	LN2        []T // (C)
	WGate, WUp []T // (F,C)
	BGate, BUp []T // (F)
	WDown      []T // (C,F)
	BDown      []T // (C)
	// Mixtral: the router and the experts replace the MLP above (whose
	// views are then nil).
	Router  []T // (E,C) block_sparse_moe.gate
	Experts []Expert[T]
}

// Expert is one SwiGLU expert of a Mixtral layer: w2(silu(w1·x) * w3·x).
type Expert[T float32 | uint16] struct {
	W1, W3 []T // (F,C) gate and up
	W2     []T // (C,F) down
}

// WeightSet is named views into one contiguous arena, laid out by ParamSpecs.
type WeightSet[T float32 | uint16] struct {
	Arena  []T
	Embed  []T // (V,C)
	Layers []Layer[T]
	NormF  []T // (C)
	LMHead []T // (V,C); aliases Embed when embeddings are tied
}

// Weights are float32 parameters or gradients.
type Weights = WeightSet[float32]

// NewWeights carves arena (len NumParams) into named views.
func NewWeights(c *Config, arena []float32) *Weights { return newWeightSet(c, arena) }

func newWeightSet[T float32 | uint16](c *Config, arena []T) *WeightSet[T] {
	return weightSetOf(c, c.ParamSpecs(), arena)
}

// vectorSpecs lists the one-dimensional tensors of ParamSpecs (norms and
// biases) with offsets into an arena holding only them: the fp32 part of a
// frozen bf16 base (Options.FrozenBF16), whose matrices live in bf16.
func (c *Config) vectorSpecs() []ParamSpec {
	var specs []ParamSpec
	off := 0
	for _, s := range c.ParamSpecs() {
		if len(s.Shape) == 1 {
			s.Offset = off
			off += s.Size()
			specs = append(specs, s)
		}
	}
	return specs
}

// specsSize is the arena length specs need.
func specsSize(specs []ParamSpec) int {
	n := 0
	for _, s := range specs {
		n = max(n, s.Offset+s.Size())
	}
	return n
}

// weightSetOf carves arena, laid out by specs, into named views; tensors
// specs leaves out get nil views.
func weightSetOf[T float32 | uint16](c *Config, specs []ParamSpec, arena []T) *WeightSet[T] {
	view := map[string][]T{}
	for _, s := range specs {
		view[s.Name] = arena[s.Offset : s.Offset+s.Size() : s.Offset+s.Size()]
	}
	embed, normf := "model.embed_tokens.weight", "model.norm.weight"
	if c.IsDBRX() {
		embed, normf = "transformer.wte.weight", "transformer.norm_f.weight"
	}
	w := &WeightSet[T]{Arena: arena, Embed: view[embed], NormF: view[normf]}
	w.LMHead = view["lm_head.weight"]
	if c.TieWordEmbeddings {
		w.LMHead = w.Embed
	}
	w.Layers = make([]Layer[T], c.NumHiddenLayers)
	for l := range w.Layers {
		w.Layers[l] = layerViews(c, view, c.layerPrefix(l))
	}
	return w
}

// layerPrefix is the HF name prefix of decoder layer l's tensors.
func (c *Config) layerPrefix(l int) string {
	if c.IsDBRX() {
		return fmt.Sprintf("transformer.blocks.%d.", l)
	}
	return fmt.Sprintf("model.layers.%d.", l)
}

// layerViews builds a Layer from the views of the tensors named p+...
func layerViews[T float32 | uint16](c *Config, view map[string][]T, p string) Layer[T] {
	if c.IsDBRX() {
		return dbrxLayerViews(c, view, p)
	}
	return llamaLayerViews(view, p, c.NumLocalExperts)
}

// llamaLayerViews builds a Layer from the views of the tensors named prefix+...;
// absent tensors (biases of a bias-free config, the matrices of a frozen
// bf16 base's fp32 arena) give nil views. A mixture has nExperts experts
// in every view set, so the experts are counted the same in all.
func llamaLayerViews[T float32 | uint16](view map[string][]T, p string, nExperts int) Layer[T] {
	var experts []Expert[T]
	for e := 0; e < nExperts; e++ {
		q := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", p, e)
		experts = append(experts, Expert[T]{W1: view[q+"w1.weight"], W2: view[q+"w2.weight"], W3: view[q+"w3.weight"]})
	}
	return Layer[T]{
		Router: view[p+"block_sparse_moe.gate.weight"], Experts: experts,
		LN1: view[p+"input_layernorm.weight"],
		WQ:  view[p+"self_attn.q_proj.weight"], BQ: view[p+"self_attn.q_proj.bias"],
		WK: view[p+"self_attn.k_proj.weight"], BK: view[p+"self_attn.k_proj.bias"],
		WV: view[p+"self_attn.v_proj.weight"], BV: view[p+"self_attn.v_proj.bias"],
		WO: view[p+"self_attn.o_proj.weight"], BO: view[p+"self_attn.o_proj.bias"],
		LN2:   view[p+"post_attention_layernorm.weight"],
		WGate: view[p+"mlp.gate_proj.weight"], BGate: view[p+"mlp.gate_proj.bias"],
		WUp: view[p+"mlp.up_proj.weight"], BUp: view[p+"mlp.up_proj.bias"],
		WDown: view[p+"mlp.down_proj.weight"], BDown: view[p+"mlp.down_proj.bias"],
	}
}

// layerRange is the arena range [lo, hi) of decoder layer l: every layer's
// tensors are contiguous and all layers have the same size.
func (c *Config) layerRange(l int) (lo, hi int) {
	var first, size int
	for _, s := range c.ParamSpecs() {
		if strings.HasPrefix(s.Name, c.layerPrefix(0)) {
			if size == 0 {
				first = s.Offset
			}
			size += s.Size()
		}
	}
	lo = first + l*size
	return lo, lo + size
}

// oneLayerViews views a layer-sized buffer (laid out as any one layer's
// arena range) as a Layer.
func oneLayerViews[T float32 | uint16](c *Config, buf []T) Layer[T] {
	view := map[string][]T{}
	base, _ := c.layerRange(0)
	for _, s := range c.ParamSpecs() {
		if strings.HasPrefix(s.Name, c.layerPrefix(0)) {
			o := s.Offset - base
			view[s.Name] = buf[o : o+s.Size() : o+s.Size()]
		}
	}
	return layerViews(c, view, c.layerPrefix(0))
}
