// Package optim holds the optimizer (AdamW with global-norm clipping) and the
// learning-rate schedule used to train engine models. The update itself runs
// on the model's engine.Device; this package decides what to update with
// which scalars. An AdamW is not safe for concurrent use.
package optim

import (
	"errors"
	"fmt"
	"math"

	"hone/engine"
	"hone/settings"
)

// AdamWConfig are the hyperparameters. The zero value means DefaultAdamW;
// any other value is used as given, so WeightDecay 0 means no decay and
// MaxGradNorm 0 no clipping.
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

// DefaultAdamW is a run's default optimizer (package settings).
var DefaultAdamW = AdamWConfig{Beta1: settings.Beta1, Beta2: settings.Beta2, Eps: settings.Eps,
	WeightDecay: settings.WeightDecay, MaxGradNorm: settings.MaxGradNorm}

// Validate reports every hyperparameter out of its range, named as the API
// names it.
func (c AdamWConfig) Validate() error {
	return errors.Join(settings.CheckBeta("optimizer.beta1", c.Beta1), settings.CheckBeta("optimizer.beta2", c.Beta2),
		settings.CheckEps(c.Eps), settings.CheckWeightDecay(c.WeightDecay), settings.CheckMaxGradNorm(c.MaxGradNorm))
}

// String describes the configuration for a run's log.
func (c AdamWConfig) String() string {
	wd := fmt.Sprintf("weight_decay %g", c.WeightDecay)
	switch {
	case c.WeightDecay == 0:
		wd += " (no decay)"
	case !c.DecayAll:
		wd += " (matrices only)"
	}
	clip := "no clipping"
	if c.MaxGradNorm > 0 {
		clip = fmt.Sprintf("max_grad_norm %g", c.MaxGradNorm)
	}
	return fmt.Sprintf("AdamW beta1 %g, beta2 %g, eps %g, %s, %s", c.Beta1, c.Beta2, c.Eps, wd, clip)
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
