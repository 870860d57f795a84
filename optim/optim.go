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
// contiguous buffers laid out like the parameter arena (or like its
// ranges, NewAdamWRanges).
type AdamW struct {
	Config AdamWConfig
	M, V   []float32
	Steps  int // optimizer steps taken
	lay    layout
}

// NewAdamW allocates optimizer state for m.
func NewAdamW(m *engine.Model, cfg AdamWConfig) (*AdamW, error) {
	return newAdamW(m.Dev, m.Config.ParamSpecs(), len(m.Params.Arena), cfg)
}

// NewAdamWAdapter allocates optimizer state for LoRA adapter a: only the
// adapter trains, so only its parameters have moments.
func NewAdamWAdapter(a *engine.Adapter, cfg AdamWConfig) (*AdamW, error) {
	return newAdamW(a.Device(), a.Specs, len(a.Params), cfg)
}

func newAdamW(dev engine.Device, specs []engine.ParamSpec, n int, cfg AdamWConfig) (*AdamW, error) {
	return NewAdamWRanges(dev, specs, [][2]int{{0, n}}, cfg)
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
	return stepModel(o.step, m, lr)
}

// stepFunc is an optimizer's update over flat parameters, gradients and
// (when held) their bf16 copy, given the gradients' global norm.
type stepFunc func(dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64) (StepResult, error)

// stepModel applies step to m's parameters and tells m they changed when
// no bf16 copy was written alongside them.
func stepModel(step stepFunc, m *engine.Model, lr float64) (StepResult, error) {
	p16 := m.LowPrecisionParams()
	res, err := step(m.Dev, m.Params.Arena, m.Grads.Arena, p16, m.GradNorm(), lr)
	if err == nil && p16 == nil {
		m.ParamsChanged()
	}
	return res, err
}

// StepAdapter is Step for an optimizer made by NewAdamWAdapter: clipping
// and the update see the adapter's gradients only.
func (o *AdamW) StepAdapter(a *engine.Adapter, lr float64) (StepResult, error) {
	return o.step(a.Device(), a.Params, a.Grads, nil, a.GradNorm(), lr)
}

func (o *AdamW) step(dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64) (StepResult, error) {
	res := StepResult{GradNorm: norm}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return res, fmt.Errorf("adamw: gradient norm is %v; update skipped", norm)
	}
	// As torch.nn.utils.clip_grad_norm_, applied as the update reads each
	// gradient (the gradients themselves are left as computed).
	var gradScale float32
	gradScale, res.Clipped = clipScale(norm, o.Config.MaxGradNorm)
	o.Steps++
	o.lay.each(params, grads, p16, func(g group, p, gr []float32, p16 []uint16) {
		wd := 0.0
		if g.decay {
			wd = o.Config.WeightDecay
		}
		dev.AdamW(p, gr, o.M[g.lo:g.hi], o.V[g.lo:g.hi], p16, engine.AdamWStep{
			LR: float32(lr), Beta1: float32(o.Config.Beta1), Beta2: float32(o.Config.Beta2),
			Eps: float32(o.Config.Eps), WeightDecay: float32(wd), Step: o.Steps, GradScale: gradScale,
		})
	})
	return res, nil
}
