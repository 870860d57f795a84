package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
)

// LoRATargets are the projections an adapter may wrap, in the order their
// tensors are laid out within a layer. They are also the default targets.
var LoRATargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// The projections by index into LoRATargets.
const (
	projQ = iota
	projK
	projV
	projO
	projGate
	projUp
	projDown
	numProj
)

// LoRAConfig describes a low-rank adapter: each targeted projection computes
// y = W x + b + Scale()·B(A x) with A (Rank, in) and B (out, Rank).
type LoRAConfig struct {
	Rank    int
	Alpha   float64
	Dropout float64 // applied to the adapter's input in training; not by the exact passes
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

// adapted says, per layer and projection, which projections lc wraps.
func (lc *LoRAConfig) adapted(c *Config) ([][numProj]bool, error) {
	var re *regexp.Regexp
	if lc.TargetRegex != "" {
		var err error
		if re, err = regexp.Compile(`^(?:` + lc.TargetRegex + `)$`); err != nil {
			return nil, fmt.Errorf("lora target regex %q: %w", lc.TargetRegex, err)
		}
		for _, other := range []string{"lm_head", "model.embed_tokens"} {
			if re.MatchString(other) {
				return nil, fmt.Errorf("lora target regex %q matches %s; hone adapts only %v", lc.TargetRegex, other, LoRATargets)
			}
		}
	}
	for _, t := range lc.Targets {
		if !slices.Contains(LoRATargets, t) {
			return nil, fmt.Errorf("lora target %q: not a projection hone adapts (%v)", t, LoRATargets)
		}
	}
	if c.IsDBRX() {
		return nil, fmt.Errorf("lora: adapters on DBRX (fused Wqkv) are not supported; train it fully")
	}
	for _, l := range lc.Layers {
		if l < 0 || l >= c.NumHiddenLayers {
			return nil, fmt.Errorf("lora layer %d: the model has layers 0..%d", l, c.NumHiddenLayers-1)
		}
	}
	on, some := make([][numProj]bool, c.NumHiddenLayers), false
	for l := range on {
		for p := range on[l] {
			switch {
			case c.MoE() && p > projO: // Mixtral's experts replace the MLP projections; they are not adapted
			case len(lc.Layers) > 0 && !slices.Contains(lc.Layers, l):
			case re != nil:
				on[l][p] = re.MatchString(projModule(l, p))
			default:
				on[l][p] = slices.Contains(lc.Targets, LoRATargets[p])
			}
			some = some || on[l][p]
		}
	}
	if !some {
		return nil, fmt.Errorf("lora: the targets select no projection of this model")
	}
	return on, nil
}

// projDims is the (in, out) of projection p.
func (c *Config) projDims(p int) (in, out int) {
	C, F, QD, KVD := c.HiddenSize, c.IntermediateSize, c.QDim(), c.KVDim()
	return [numProj]int{C, C, C, QD, C, C, F}[p], [numProj]int{QD, KVD, KVD, C, F, F, C}[p]
}

// projModule is the HF module name of projection p of layer l.
func projModule(l, p int) string {
	kind := "mlp"
	if p <= projO {
		kind = "self_attn"
	}
	return fmt.Sprintf("model.layers.%d.%s.%s", l, kind, LoRATargets[p])
}

// adapterSpecs lists the adapter's tensors under their PEFT names in arena
// order: per layer, per adapted projection, lora_A (r, in) then lora_B (out, r).
func (c *Config) adapterSpecs(rank int, on [][numProj]bool) []ParamSpec {
	var specs []ParamSpec
	off := 0
	for l := 0; l < c.NumHiddenLayers; l++ {
		for p := 0; p < numProj; p++ {
			if !on[l][p] {
				continue
			}
			in, out := c.projDims(p)
			pre := "base_model.model." + projModule(l, p)
			for _, s := range []ParamSpec{
				{Name: pre + ".lora_A.weight", Shape: []int{rank, in}},
				{Name: pre + ".lora_B.weight", Shape: []int{out, rank}},
			} {
				s.Offset, s.Decay = off, true
				off += s.Size()
				specs = append(specs, s)
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
	p, g   [][numProj]loraPair // per layer
	// scaleI is Scale() on the diagonal of an (r,r) matrix: multiplying by
	// it applies the scale through MatMul, exactly (the other terms are 0).
	scaleI []float32
	// t, u, du are (N, r) scratch of the adapter passes, sized for n tokens.
	t, u, du []float32
	n        int
	drop     dropout
}

// NewAdapter allocates a zeroed adapter for config c on dev. The targets
// must be names from LoRATargets and the rank positive.
func NewAdapter(c *Config, dev Device, lc LoRAConfig) (*Adapter, error) {
	if lc.Rank <= 0 {
		return nil, fmt.Errorf("lora rank %d: must be positive", lc.Rank)
	}
	on, err := lc.adapted(c)
	if err != nil {
		return nil, err
	}
	lc.Targets, lc.Layers = slices.Clone(lc.Targets), slices.Clone(lc.Layers)
	specs := c.adapterSpecs(lc.Rank, on)
	last := specs[len(specs)-1]
	a := &Adapter{Config: lc, Specs: specs, dev: dev,
		Params: dev.Alloc(last.Offset + last.Size()), Grads: dev.Alloc(last.Offset + last.Size())}
	a.p, a.g = a.views(on, a.Params), a.views(on, a.Grads)
	r := lc.Rank
	diag := make([]float32, r*r)
	for i := 0; i < r; i++ {
		diag[i*r+i] = lc.Scale()
	}
	a.scaleI = dev.Alloc(r * r)
	dev.Upload(a.scaleI, diag)
	return a, nil
}

func (a *Adapter) views(on [][numProj]bool, arena []float32) [][numProj]loraPair {
	v := make([][numProj]loraPair, len(on))
	i := 0
	for l := range v {
		for p := 0; p < numProj; p++ {
			if on[l][p] {
				sa, sb := a.Specs[i], a.Specs[i+1]
				v[l][p] = loraPair{arena[sa.Offset : sa.Offset+sa.Size()], arena[sb.Offset : sb.Offset+sb.Size()]}
				i += 2
			}
		}
	}
	return v
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

// adapt adds scale·(x Aᵀ) Bᵀ into y(n,out) for projection p of layer l,
// when the adapter wraps it. It runs in fp32 whatever the base precision.
func (m *Model) adapt(l, p int, y, x []float32, n int) {
	a := m.lora
	if a == nil || a.p[l][p].A == nil {
		return
	}
	in, out := m.Config.projDims(p)
	w, r, d := a.p[l][p], a.Config.Rank, m.Dev
	a.ensure(n)
	x = a.dropped(l, p, x, n, in)
	d.MatMul(a.t, x, w.A, n, r, in, xWt)
	d.MatMul(a.u, a.t, a.scaleI, n, r, r, MatMulFlags{})
	d.MatMul(y, a.u, w.B, n, out, r, MatMulFlags{TransB: true, Acc: true})
}

// adaptBackward adds the adapter's gradients for projection p of layer l
// given its output gradient dy(n,out) and input x(n,in): dB += dyᵀ·u,
// dA += dtᵀ·x, and dx += dt·A, with t = x Aᵀ (recomputed), u = s·t and
// dt = s·(dy B). Under dropout x is the dropped input m·x/(1-p) (the mask
// of the forward pass, drawn again) and dx takes the mask too.
func (m *Model) adaptBackward(l, p int, dx, dy, x []float32, n int) {
	a := m.lora
	if a == nil || a.p[l][p].A == nil {
		return
	}
	in, out := m.Config.projDims(p)
	w, g, r, d := a.p[l][p], a.g[l][p], a.Config.Rank, m.Dev
	a.ensure(n)
	xd := a.dropped(l, p, x, n, in)
	d.MatMul(a.t, xd, w.A, n, r, in, xWt)
	d.MatMul(a.u, a.t, a.scaleI, n, r, r, MatMulFlags{})
	d.MatMul(g.B, dy, a.u, out, r, n, dytX)
	d.MatMul(a.du, dy, w.B, n, r, out, dyW)
	d.MatMul(a.t, a.du, a.scaleI, n, r, r, MatMulFlags{}) // t now holds dt
	d.MatMul(g.A, a.t, xd, r, in, n, dytX)
	if !a.drop.on {
		d.MatMul(dx, a.t, w.A, n, in, r, MatMulFlags{Acc: true})
		return
	}
	d.MatMul(a.drop.dx, a.t, w.A, n, in, r, MatMulFlags{})
	a.addMasked(dx, a.drop.dx, n, in)
}
