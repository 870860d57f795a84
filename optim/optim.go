// Package optim holds the optimizer (AdamW with global-norm clipping) and the
// learning-rate schedule used to train engine models. The update itself runs
// on the model's engine.Device; this package decides what to update with
// which scalars. An AdamW is not safe for concurrent use.
package optim

import (
	"fmt"
	"math"

	"hone/engine"
)

// AdamWConfig are the hyperparameters; zero fields take the defaults of
// DefaultAdamW.
type AdamWConfig struct {
	Beta1, Beta2 float64
	Eps          float64
	WeightDecay  float64
	// DecayAll applies weight decay to norms and biases too; by default only
	// matrices (embeddings and projections) decay.
	DecayAll bool
	// MaxGradNorm clips the global gradient L2 norm; 0 disables clipping.
	MaxGradNorm float64
}

// DefaultAdamW matches torch.optim.AdamW's defaults with clipping at 1.0.
var DefaultAdamW = AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, MaxGradNorm: 1.0}

// Validate reports out-of-range hyperparameters by name.
func (c AdamWConfig) Validate() error {
	switch {
	case c.Beta1 < 0 || c.Beta1 >= 1:
		return fmt.Errorf("adamw: beta1 %g must be in [0, 1)", c.Beta1)
	case c.Beta2 < 0 || c.Beta2 >= 1:
		return fmt.Errorf("adamw: beta2 %g must be in [0, 1)", c.Beta2)
	case !(c.Eps > 0):
		return fmt.Errorf("adamw: eps %g must be positive", c.Eps)
	case c.WeightDecay < 0:
		return fmt.Errorf("adamw: weight_decay %g must not be negative", c.WeightDecay)
	case c.MaxGradNorm < 0:
		return fmt.Errorf("adamw: max_grad_norm %g must not be negative", c.MaxGradNorm)
	}
	return nil
}

// AdamW keeps the first and second moments of every parameter in two
// contiguous buffers laid out like the parameter arena.
type AdamW struct {
	Config AdamWConfig
	M, V   []float32
	Steps  int // optimizer steps taken
	groups []group
}

// group is a contiguous arena range sharing one decay setting.
type group struct {
	lo, hi int
	decay  bool
}

// NewAdamW allocates optimizer state for m.
func NewAdamW(m *engine.Model, cfg AdamWConfig) (*AdamW, error) {
	if cfg == (AdamWConfig{}) {
		cfg = DefaultAdamW
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := len(m.Params.Arena)
	o := &AdamW{Config: cfg, M: m.Dev.Alloc(n), V: m.Dev.Alloc(n)}
	for _, s := range m.Config.ParamSpecs() {
		decay := s.Decay || cfg.DecayAll
		if k := len(o.groups); k > 0 && o.groups[k-1].decay == decay && o.groups[k-1].hi == s.Offset {
			o.groups[k-1].hi = s.Offset + s.Size()
			continue
		}
		o.groups = append(o.groups, group{s.Offset, s.Offset + s.Size(), decay})
	}
	return o, nil
}

// StepResult reports what one optimizer step saw.
type StepResult struct {
	GradNorm float64 // before clipping
	Clipped  bool
}

// Step clips m's gradients to MaxGradNorm and applies one AdamW update at
// learning rate lr. A non-finite gradient norm skips the update (the
// parameters stay as they were) and is reported as an error, so one bad
// batch cannot poison the weights.
func (o *AdamW) Step(m *engine.Model, lr float64) (StepResult, error) {
	norm := m.GradNorm()
	res := StepResult{GradNorm: norm}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return res, fmt.Errorf("adamw: gradient norm is %v; update skipped", norm)
	}
	gradScale := float32(1)
	if c := o.Config.MaxGradNorm; c > 0 && norm > c {
		// As torch.nn.utils.clip_grad_norm_, applied as the update reads
		// each gradient (the gradients themselves are left as computed).
		gradScale = float32(c / (norm + 1e-6))
		res.Clipped = true
	}
	o.Steps++
	p16 := m.LowPrecisionParams()
	for _, g := range o.groups {
		var g16 []uint16
		if p16 != nil {
			g16 = p16[g.lo:g.hi]
		}
		wd := 0.0
		if g.decay {
			wd = o.Config.WeightDecay
		}
		m.Dev.AdamW(m.Params.Arena[g.lo:g.hi], m.Grads.Arena[g.lo:g.hi], o.M[g.lo:g.hi], o.V[g.lo:g.hi], g16, engine.AdamWStep{
			LR: float32(lr), Beta1: float32(o.Config.Beta1), Beta2: float32(o.Config.Beta2),
			Eps: float32(o.Config.Eps), WeightDecay: float32(wd), Step: o.Steps, GradScale: gradScale,
		})
	}
	if p16 == nil {
		m.ParamsChanged()
	}
	return res, nil
}
