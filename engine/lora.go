package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
)

// LoRATargets are the projections an adapter may wrap in a Llama or
// Mistral layer, in the order their tensors are laid out within a layer.
// They are also those models' default targets (see DefaultLoRATargets).
var LoRATargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// LoRAModuleNames are the target names hone adapts in some architecture:
// Llama's, Mixtral's router (gate) and experts (w1, w2, w3), DBRX's fused
// Wqkv, out_proj and router (layer). Which a model has: LoRAModules.
var LoRAModuleNames = append(slices.Clone(LoRATargets), "gate", "w1", "w2", "w3", "Wqkv", "out_proj", "layer")

// The adaptable sites of a layer outside the experts: the projections by
// index into LoRATargets (for DBRX, projQ is the fused Wqkv and projO
// out_proj), then the router.
const (
	projQ = iota
	projK
	projV
	projO
	projGate
	projUp
	projDown
	numProj    // Llama's projections; they number the dense dropout streams
	siteRouter = numProj
	numSites   = numProj + 1
)

// An expert's projections, in PEFT's (state-dict) order.
const (
	expW1 = iota
	expW2
	expW3
	numExp
)

var expertTargets = [numExp]string{"w1", "w2", "w3"}

// LoRAConfig describes a low-rank adapter: each targeted projection computes
// y = W x + b + Scale()·B(A x) with A (Rank, in) and B (out, Rank).
type LoRAConfig struct {
	Rank    int
	Alpha   float64
	Dropout float64 // applied to the adapter's input in training; not by the exact passes
	// Targets are module names from the model's LoRAModules; nil means the
	// architecture's DefaultLoRATargets, and "all-linear" all its modules.
	Targets []string
	// TargetRegex, when set, replaces Targets: PEFT's string target_modules,
	// a regular expression a projection's module name (e.g.
	// model.layers.3.self_attn.q_proj) must match in full.
	TargetRegex string
	RSLoRA      bool // scale by alpha/sqrt(r) instead of alpha/r
	// Layers, when not empty, restricts the adapter to these decoder
	// layers (PEFT's layers_to_transform).
	Layers []int
	// BaseModel is base_model_name_or_path, kept for the saved config.
	BaseModel string
}

// Scale is the factor on B·A: alpha/r, or alpha/sqrt(r) with rsLoRA.
func (lc *LoRAConfig) Scale() float32 {
	if lc.RSLoRA {
		return float32(lc.Alpha / math.Sqrt(float64(lc.Rank)))
	}
	return float32(lc.Alpha / float64(lc.Rank))
}

// siteNames are the PEFT target names of c's non-expert sites ("" where
// the architecture has no such module).
func (c *Config) siteNames() [numSites]string {
	switch {
	case c.IsDBRX():
		return [numSites]string{projQ: "Wqkv", projO: "out_proj", siteRouter: "layer"}
	case c.MoE():
		return [numSites]string{"q_proj", "k_proj", "v_proj", "o_proj", siteRouter: "gate"}
	}
	var n [numSites]string
	copy(n[:], LoRATargets)
	return n
}

// hasLoRAExperts says whether c's experts are Linear modules a LoRA can
// wrap (Mixtral); DBRX's are fused parameters.
func (c *Config) hasLoRAExperts() bool { return c.MoE() && !c.IsDBRX() }

// LoRAModules are the target names an adapter on c may use.
func (c *Config) LoRAModules() []string {
	var names []string
	for _, n := range c.siteNames() {
		if n != "" {
			names = append(names, n)
		}
	}
	if c.hasLoRAExperts() {
		names = append(names, expertTargets[:]...)
	}
	return names
}

// DefaultLoRATargets are the targets when none are given: every projection
// of a Llama layer; Mixtral's attention and experts (what PEFT users
// target; not the router); DBRX's Wqkv and out_proj.
func (c *Config) DefaultLoRATargets() []string {
	switch {
	case c.IsDBRX():
		return []string{"Wqkv", "out_proj"}
	case c.MoE():
		return []string{"q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3"}
	}
	return slices.Clone(LoRATargets)
}

// loraLayout says, per layer, which sites and which experts' projections
// an adapter wraps.
type loraLayout struct {
	site [][numSites]bool
	exp  [][][numExp]bool // per layer, per expert
}

// resolveTargets is lc's explicit target list for c: the defaults for nil,
// every module for "all-linear", each name checked against c's modules.
func (lc *LoRAConfig) resolveTargets(c *Config) ([]string, error) {
	switch {
	case lc.TargetRegex != "":
		return nil, nil
	case lc.Targets == nil:
		return c.DefaultLoRATargets(), nil
	case slices.Equal(lc.Targets, []string{"all-linear"}):
		return c.LoRAModules(), nil
	}
	valid := c.LoRAModules()
	for _, t := range lc.Targets {
		switch {
		case slices.Contains(valid, t):
		case c.IsDBRX() && (t == "w1" || t == "v1" || t == "w2"):
			return nil, fmt.Errorf("lora target %q: DBRX's experts are fused parameters (ffn.experts.mlp.%s), which PEFT's LoRA cannot wrap; target %v", t, t, valid)
		default:
			return nil, fmt.Errorf("lora target %q: %s has no such module; its targets are %v", t, c.archName(), valid)
		}
	}
	return lc.Targets, nil
}

// adapted says which sites lc wraps in c.
func (lc *LoRAConfig) adapted(c *Config) (loraLayout, error) {
	var re *regexp.Regexp
	if lc.TargetRegex != "" {
		var err error
		if re, err = regexp.Compile(`^(?:` + lc.TargetRegex + `)$`); err != nil {
			return loraLayout{}, fmt.Errorf("lora target regex %q: %w", lc.TargetRegex, err)
		}
		for _, other := range []string{"lm_head", "model.embed_tokens", "transformer.wte"} {
			if re.MatchString(other) {
				return loraLayout{}, fmt.Errorf("lora target regex %q matches %s; hone adapts only %v", lc.TargetRegex, other, c.LoRAModules())
			}
		}
	}
	targets, err := lc.resolveTargets(c)
	if err != nil {
		return loraLayout{}, err
	}
	for _, l := range lc.Layers {
		if l < 0 || l >= c.NumHiddenLayers {
			return loraLayout{}, fmt.Errorf("lora layer %d: the model has layers 0..%d", l, c.NumHiddenLayers-1)
		}
	}
	names, some := c.siteNames(), false
	pick := func(l int, name, module string) bool {
		switch {
		case name == "" || len(lc.Layers) > 0 && !slices.Contains(lc.Layers, l):
			return false
		case re != nil:
			return re.MatchString(module)
		}
		return slices.Contains(targets, name)
	}
	on := loraLayout{site: make([][numSites]bool, c.NumHiddenLayers), exp: make([][][numExp]bool, c.NumHiddenLayers)}
	for l := range on.site {
		for s := range on.site[l] {
			on.site[l][s] = pick(l, names[s], c.siteModule(l, s))
			some = some || on.site[l][s]
		}
		if !c.hasLoRAExperts() {
			continue
		}
		on.exp[l] = make([][numExp]bool, c.NumLocalExperts)
		for e := range on.exp[l] {
			for k := range on.exp[l][e] {
				on.exp[l][e][k] = pick(l, expertTargets[k], c.expertModule(l, e, k))
				some = some || on.exp[l][e][k]
			}
		}
	}
	if !some {
		return loraLayout{}, fmt.Errorf("lora: the targets select no module of this model (its targets are %v)", c.LoRAModules())
	}
	return on, nil
}

// siteDims is the (in, out) of site s; DBRX's Wqkv outputs q, k and v.
func (c *Config) siteDims(s int) (in, out int) {
	C, F, QD, KVD := c.HiddenSize, c.IntermediateSize, c.QDim(), c.KVDim()
	switch {
	case s == siteRouter:
		return C, c.NumLocalExperts
	case s == projQ && c.IsDBRX():
		return C, QD + 2*KVD
	}
	return [numProj]int{C, C, C, QD, C, C, F}[s], [numProj]int{QD, KVD, KVD, C, F, F, C}[s]
}

// expertDims is the (in, out) of an expert's projection k.
func (c *Config) expertDims(k int) (in, out int) {
	if k == expW2 {
		return c.IntermediateSize, c.HiddenSize
	}
	return c.HiddenSize, c.IntermediateSize
}

// siteModule is the HF module name of site s of layer l.
func (c *Config) siteModule(l, s int) string {
	name := c.siteNames()[s]
	switch {
	case c.IsDBRX() && s == siteRouter:
		return fmt.Sprintf("transformer.blocks.%d.ffn.router.%s", l, name)
	case c.IsDBRX():
		return fmt.Sprintf("transformer.blocks.%d.norm_attn_norm.attn.%s", l, name)
	case s == siteRouter:
		return fmt.Sprintf("model.layers.%d.block_sparse_moe.%s", l, name)
	case s <= projO:
		return fmt.Sprintf("model.layers.%d.self_attn.%s", l, name)
	}
	return fmt.Sprintf("model.layers.%d.mlp.%s", l, name)
}

// expertModule is the HF module name of expert e's projection k in layer l.
func (c *Config) expertModule(l, e, k int) string {
	return fmt.Sprintf("model.layers.%d.block_sparse_moe.experts.%d.%s", l, e, expertTargets[k])
}

// adapterSpecs lists the adapter's tensors under their PEFT names in arena
// order: per layer, per adapted site, then per expert and projection,
// lora_A (r, in) then lora_B (out, r).
func (c *Config) adapterSpecs(rank int, on loraLayout) []ParamSpec {
	var specs []ParamSpec
	off := 0
	add := func(module string, in, out int) {
		pre := "base_model.model." + module
		for _, s := range []ParamSpec{
			{Name: pre + ".lora_A.weight", Shape: []int{rank, in}},
			{Name: pre + ".lora_B.weight", Shape: []int{out, rank}},
		} {
			s.Offset, s.Decay = off, true
			off += s.Size()
			specs = append(specs, s)
		}
	}
	for l := 0; l < c.NumHiddenLayers; l++ {
		for s := 0; s < numSites; s++ {
			if on.site[l][s] {
				in, out := c.siteDims(s)
				add(c.siteModule(l, s), in, out)
			}
		}
		for e := range on.exp[l] {
			for k := 0; k < numExp; k++ {
				if on.exp[l][e][k] {
					in, out := c.expertDims(k)
					add(c.expertModule(l, e, k), in, out)
				}
			}
		}
	}
	return specs
}

// loraPair is the views of one projection's A and B in an arena; nil when
// the projection is not adapted.
type loraPair struct{ A, B []float32 }

// Adapter holds a LoRA adapter's weights and gradients on a device. Attach
// it to a Model to train it: the base weights are then frozen.
type Adapter struct {
	Config LoRAConfig
	Specs  []ParamSpec
	Params []float32 // arena laid out by Specs
	Grads  []float32 // same layout
	dev    Device
	p, g   [][numSites]loraPair // per layer
	ep, eg [][][numExp]loraPair // per layer, per expert
	// scaleI is Scale() on the diagonal of an (r,r) matrix: multiplying by
	// it applies the scale through MatMul, exactly (the other terms are 0).
	scaleI []float32
	// t, u, du are (N, r) scratch of the adapter passes, sized for n tokens.
	t, u, du []float32
	n        int
	drop     dropout
}

// NewAdapter allocates a zeroed adapter for config c on dev. The targets
// must be names from c.LoRAModules() (nil: its defaults) and the rank
// positive.
func NewAdapter(c *Config, dev Device, lc LoRAConfig) (*Adapter, error) {
	if lc.Rank <= 0 {
		return nil, fmt.Errorf("lora rank %d: must be positive", lc.Rank)
	}
	on, err := lc.adapted(c)
	if err != nil {
		return nil, err
	}
	targets, _ := lc.resolveTargets(c)
	lc.Targets, lc.Layers = slices.Clone(targets), slices.Clone(lc.Layers)
	specs := c.adapterSpecs(lc.Rank, on)
	last := specs[len(specs)-1]
	a := &Adapter{Config: lc, Specs: specs, dev: dev,
		Params: dev.Alloc(last.Offset + last.Size()), Grads: dev.Alloc(last.Offset + last.Size())}
	a.p, a.ep = a.views(on, a.Params)
	a.g, a.eg = a.views(on, a.Grads)
	r := lc.Rank
	diag := make([]float32, r*r)
	for i := 0; i < r; i++ {
		diag[i*r+i] = lc.Scale()
	}
	a.scaleI = dev.Alloc(r * r)
	dev.Upload(a.scaleI, diag)
	return a, nil
}

// views slices arena by the specs, in adapterSpecs' order.
func (a *Adapter) views(on loraLayout, arena []float32) ([][numSites]loraPair, [][][numExp]loraPair) {
	i := 0
	next := func() loraPair {
		sa, sb := a.Specs[i], a.Specs[i+1]
		i += 2
		return loraPair{arena[sa.Offset : sa.Offset+sa.Size()], arena[sb.Offset : sb.Offset+sb.Size()]}
	}
	v, ev := make([][numSites]loraPair, len(on.site)), make([][][numExp]loraPair, len(on.site))
	for l := range v {
		for s := 0; s < numSites; s++ {
			if on.site[l][s] {
				v[l][s] = next()
			}
		}
		ev[l] = make([][numExp]loraPair, len(on.exp[l]))
		for e := range on.exp[l] {
			for k := 0; k < numExp; k++ {
				if on.exp[l][e][k] {
					ev[l][e][k] = next()
				}
			}
		}
	}
	return v, ev
}

// InitPEFT initialises the adapter as PEFT does by default: A from
// kaiming-uniform (a=√5), i.e. U(-1/√in, 1/√in), and B zero, so the adapted
// model starts equal to the base. Each tensor draws from its own stream.
func (a *Adapter) InitPEFT(seed uint64) {
	_ = FillDevice(a.dev, a.Params, func(arena []float32) error {
		for i, s := range a.Specs {
			dst := arena[s.Offset : s.Offset+s.Size()]
			if i%2 == 1 { // lora_B
				clear(dst)
				continue
			}
			r, bound := rand.New(rand.NewPCG(seed, uint64(i))), 1/math.Sqrt(float64(s.Shape[1]))
			for j := range dst {
				dst[j] = float32((2*r.Float64() - 1) * bound)
			}
		}
		return nil
	})
}

// ZeroGrad clears the adapter's gradients.
func (a *Adapter) ZeroGrad() { a.dev.Zero(a.Grads) }

// GradNorm is the L2 norm of the adapter's gradients.
func (a *Adapter) GradNorm() float64 { return math.Sqrt(a.dev.SumSquares(a.Grads)) }

// Device is the device the adapter lives on.
func (a *Adapter) Device() Device { return a.dev }

// ensure sizes the (N, r) scratch for n tokens.
func (a *Adapter) ensure(n int) {
	if a.n >= n {
		return
	}
	a.freeScratch()
	r := a.Config.Rank
	a.t, a.u, a.du, a.n = a.dev.Alloc(n*r), a.dev.Alloc(n*r), a.dev.Alloc(n*r), n
}

func (a *Adapter) freeScratch() {
	if a.n > 0 {
		freeAll(a.dev, a.t, a.u, a.du)
	}
	a.t, a.u, a.du, a.n = nil, nil, nil, 0
}

// Close releases the adapter's device memory.
func (a *Adapter) Close() {
	a.freeScratch()
	a.drop.free(a.dev)
	freeAll(a.dev, a.Params, a.Grads, a.scaleI)
	a.Params, a.Grads, a.scaleI = nil, nil, nil
}

// Attach makes m run with adapter a (nil detaches it). While attached, the
// base weights are frozen: backward passes compute only input gradients
// through them and add the adapter's gradients into a.Grads. Logits,
// Evaluate, ForwardBackward and the decoder (NewDecoder) apply it.
func (m *Model) Attach(a *Adapter) error {
	if a != nil && a.dev != m.Dev {
		return fmt.Errorf("lora: the adapter is on another device than the model")
	}
	if a != nil && len(a.p) != m.Config.NumHiddenLayers {
		return fmt.Errorf("lora: the adapter has %d layers, the model %d", len(a.p), m.Config.NumHiddenLayers)
	}
	m.lora = a
	return nil
}

// frozen says whether the base weights take no gradients.
func (m *Model) frozen() bool { return m.lora != nil }

// loraOut is a row block of an adapted projection's output (or its
// gradient) of width dim: DBRX's Wqkv has three (q, k, v), others one.
type loraOut struct {
	y   []float32
	dim int
}

// Dropout streams: Llama's projections keep l·numProj+p; the router and the
// experts number theirs above 2³⁰ (layer, expert+1, projection in fields).
func siteStream(l, s int) uint64 {
	if s < numProj {
		return uint64(l*numProj + s)
	}
	return 1<<30 | uint64(l)<<16
}

func expertStream(l, e, k int) uint64 { return 1<<30 | uint64(l)<<16 | uint64(e+1)<<2 | uint64(k) }

// loraForward adds scale·(x Aᵀ) Bᵀ into the n rows of the outputs, B's
// rows split among them in order. It runs in fp32 whatever the base
// precision.
func (m *Model) loraForward(w loraPair, stream uint64, x []float32, n, in int, outs ...loraOut) {
	a, d := m.lora, m.Dev
	r := a.Config.Rank
	a.ensure(n)
	x = a.dropped(stream, x, n, in)
	d.MatMul(a.t, x, w.A, n, r, in, xWt)
	d.MatMul(a.u, a.t, a.scaleI, n, r, r, MatMulFlags{})
	off := 0
	for _, o := range outs {
		d.MatMul(o.y, a.u, w.B[off*r:(off+o.dim)*r], n, o.dim, r, MatMulFlags{TransB: true, Acc: true})
		off += o.dim
	}
}

// loraBackward adds the adapter's gradients given the output gradients dys
// (row blocks as in loraForward) and input x(n,in): dB += dyᵀ·u,
// dA += dtᵀ·x, and dx += dt·A, with t = x Aᵀ (recomputed), u = s·t and
// dt = s·(dy B). Under dropout x is the dropped input m·x/(1-p) (the mask
// of the forward pass, drawn again) and dx takes the mask too.
func (m *Model) loraBackward(w, g loraPair, stream uint64, dx, x []float32, n, in int, dys ...loraOut) {
	a, d := m.lora, m.Dev
	r := a.Config.Rank
	a.ensure(n)
	xd := a.dropped(stream, x, n, in)
	d.MatMul(a.t, xd, w.A, n, r, in, xWt)
	d.MatMul(a.u, a.t, a.scaleI, n, r, r, MatMulFlags{})
	off := 0
	for i, o := range dys {
		b, gb := w.B[off*r:(off+o.dim)*r], g.B[off*r:(off+o.dim)*r]
		d.MatMul(gb, o.y, a.u, o.dim, r, n, dytX)
		d.MatMul(a.du, o.y, b, n, r, o.dim, MatMulFlags{Acc: i > 0})
		off += o.dim
	}
	d.MatMul(a.t, a.du, a.scaleI, n, r, r, MatMulFlags{}) // t now holds dt
	d.MatMul(g.A, a.t, xd, r, in, n, dytX)
	if !a.drop.on {
		d.MatMul(dx, a.t, w.A, n, in, r, MatMulFlags{Acc: true})
		return
	}
	d.MatMul(a.drop.dx, a.t, w.A, n, in, r, MatMulFlags{})
	a.addMasked(dx, a.drop.dx, n, in)
}

// adapt adds the adapter's term of site s of layer l into y(n,out) for
// input x(n,in), when the adapter wraps it.
func (m *Model) adapt(l, s int, y, x []float32, n int) {
	if a := m.lora; a != nil && a.p[l][s].A != nil {
		in, out := m.Config.siteDims(s)
		m.loraForward(a.p[l][s], siteStream(l, s), x, n, in, loraOut{y, out})
	}
}

// adaptBackward is adapt's backward for output gradient dy(n,out), adding
// into dx(n,in).
func (m *Model) adaptBackward(l, s int, dx, dy, x []float32, n int) {
	if a := m.lora; a != nil && a.p[l][s].A != nil {
		in, out := m.Config.siteDims(s)
		m.loraBackward(a.p[l][s], a.g[l][s], siteStream(l, s), dx, x, n, in, loraOut{dy, out})
	}
}

// adaptQKV adds the adapter's terms of the query, key and value
// projections: three, or DBRX's fused Wqkv, whose B rows are q's, k's
// and v's.
func (m *Model) adaptQKV(l int, q, k, v, x []float32, n int) {
	a, c := m.lora, m.Config
	if a == nil || !c.IsDBRX() {
		m.adapt(l, projQ, q, x, n)
		m.adapt(l, projK, k, x, n)
		m.adapt(l, projV, v, x, n)
		return
	}
	if a.p[l][projQ].A != nil {
		m.loraForward(a.p[l][projQ], siteStream(l, projQ), x, n, c.HiddenSize,
			loraOut{q, c.QDim()}, loraOut{k, c.KVDim()}, loraOut{v, c.KVDim()})
	}
}

// adaptQKVBackward is adaptQKV's backward.
func (m *Model) adaptQKVBackward(l int, dx, dq, dk, dv, x []float32, n int) {
	a, c := m.lora, m.Config
	if a == nil || !c.IsDBRX() {
		m.adaptBackward(l, projQ, dx, dq, x, n)
		m.adaptBackward(l, projK, dx, dk, x, n)
		m.adaptBackward(l, projV, dx, dv, x, n)
		return
	}
	if a.p[l][projQ].A != nil {
		m.loraBackward(a.p[l][projQ], a.g[l][projQ], siteStream(l, projQ), dx, x, n, c.HiddenSize,
			loraOut{dq, c.QDim()}, loraOut{dk, c.KVDim()}, loraOut{dv, c.KVDim()})
	}
}

// adaptQKVBlock adds into pre(n,dim) block j (0 q, 1 k, 2 v) of the
// adapter's term of DBRX's Wqkv, for the clamp's backward, which needs the
// unclamped output.
func (m *Model) adaptQKVBlock(l, j int, pre, x []float32, n int) {
	a, c := m.lora, m.Config
	if a == nil || a.p[l][projQ].A == nil {
		return
	}
	w, r := a.p[l][projQ], a.Config.Rank
	off, dim := [3]int{0, c.QDim(), c.QDim() + c.KVDim()}[j], [3]int{c.QDim(), c.KVDim(), c.KVDim()}[j]
	block := loraPair{A: w.A, B: w.B[off*r : (off+dim)*r]}
	m.loraForward(block, siteStream(l, projQ), x, n, c.HiddenSize, loraOut{pre, dim})
}

// adaptExpert adds the adapter's term of expert e's projection k in layer
// l into y for its n routed rows x.
func (m *Model) adaptExpert(l, e, k int, y, x []float32, n int) {
	a := m.lora
	if a == nil || len(a.ep[l]) == 0 || a.ep[l][e][k].A == nil {
		return
	}
	in, out := m.Config.expertDims(k)
	m.loraForward(a.ep[l][e][k], expertStream(l, e, k), x, n, in, loraOut{y, out})
}

// adaptExpertBackward is adaptExpert's backward.
func (m *Model) adaptExpertBackward(l, e, k int, dx, dy, x []float32, n int) {
	a := m.lora
	if a == nil || len(a.ep[l]) == 0 || a.ep[l][e][k].A == nil {
		return
	}
	in, out := m.Config.expertDims(k)
	m.loraBackward(a.ep[l][e][k], a.eg[l][e][k], expertStream(l, e, k), dx, x, n, in, loraOut{dy, out})
}
