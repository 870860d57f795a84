package optim

import (
	"errors"
	"fmt"
	"math"

	"hone/engine"
	"hone/settings"
)

// LionWConfig are LionW's hyperparameters. The zero value means
// DefaultLionW; any other value is used as given.
type LionWConfig struct {
	Beta1, Beta2 float64
	// WeightDecay is decoupled as in composer's DecoupledLionW: each step
	// multiplies a decayed weight by 1 − (lr/peak)·WeightDecay, so it
	// follows the schedule but not the size of the learning rate.
	WeightDecay float64
	DecayAll    bool    // as AdamWConfig.DecayAll
	MaxGradNorm float64 // clips the global gradient L2 norm; 0 disables clipping
}

// DefaultLionW is a LionW run's default optimizer (package settings).
var DefaultLionW = LionWConfig{Beta1: settings.LionWBeta1, Beta2: settings.LionWBeta2,
	WeightDecay: settings.LionWWeightDecay, MaxGradNorm: settings.MaxGradNorm}

// Validate reports every hyperparameter out of its range, named as the API
// names it.
func (c LionWConfig) Validate() error {
	return errors.Join(settings.CheckBeta("optimizer.beta1", c.Beta1), settings.CheckBeta("optimizer.beta2", c.Beta2),
		settings.CheckLionWWeightDecay(c.WeightDecay), settings.CheckMaxGradNorm(c.MaxGradNorm))
}

// String describes the configuration for a run's log.
func (c LionWConfig) String() string {
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
	return fmt.Sprintf("LionW beta1 %g, beta2 %g, %s, %s", c.Beta1, c.Beta2, wd, clip)
}

// LionW (Chen et al., 2023, "Symbolic Discovery of Optimization
// Algorithms") with decoupled weight decay as composer's DecoupledLionW
// defines it. It keeps one moment per parameter, half AdamW's state.
// A LionW is not safe for concurrent use.
type LionW struct {
	Config LionWConfig
	M      []float32 // exp_avg, laid out like the parameter arena
	Steps  int       // optimizer steps taken
	// Peak is the schedule's peak learning rate (DecoupledLionW's
	// initial_lr): the weight decay of a step is scaled by lr/Peak.
	Peak float64
	lay  layout
}

// NewLionW allocates LionW state for m; peak is the schedule's peak
// learning rate.
func NewLionW(m *engine.Model, cfg LionWConfig, peak float64) (*LionW, error) {
	return newLionW(m.Dev, m.Config.ParamSpecs(), len(m.Params.Arena), cfg, peak)
}

// NewLionWAdapter allocates LionW state for LoRA adapter a alone.
func NewLionWAdapter(a *engine.Adapter, cfg LionWConfig, peak float64) (*LionW, error) {
	return newLionW(a.Device(), a.Specs, len(a.Params), cfg, peak)
}

func newLionW(dev engine.Device, specs []engine.ParamSpec, n int, cfg LionWConfig, peak float64) (*LionW, error) {
	return NewLionWRanges(dev, specs, [][2]int{{0, n}}, cfg, peak)
}

// Step clips m's gradients to MaxGradNorm and applies one LionW update at
// learning rate lr. A non-finite gradient norm skips the update and is
// reported as an error, as for AdamW.
func (o *LionW) Step(m *engine.Model, lr float64) (StepResult, error) {
	return stepModel(o.step, m, lr)
}

// StepAdapter is Step for an optimizer made by NewLionWAdapter.
func (o *LionW) StepAdapter(a *engine.Adapter, lr float64) (StepResult, error) {
	return o.step(a.Device(), a.Params, a.Grads, nil, a.GradNorm(), lr)
}

func (o *LionW) step(dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64) (StepResult, error) {
	res := StepResult{GradNorm: norm}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return res, fmt.Errorf("lionw: gradient norm is %v; update skipped", norm)
	}
	var gradScale float32
	gradScale, res.Clipped = clipScale(norm, o.Config.MaxGradNorm)
	o.Steps++
	o.lay.each(params, grads, p16, func(g group, p, gr []float32, p16 []uint16) {
		decay := 1.0
		if g.decay && o.Config.WeightDecay != 0 {
			decay = 1 - lr/o.Peak*o.Config.WeightDecay
		}
		dev.LionW(p, gr, o.M[g.lo:g.hi], p16, engine.LionWStep{
			LR: float32(lr), Beta1: float32(o.Config.Beta1), Beta2: float32(o.Config.Beta2),
			Decay: float32(decay), GradScale: gradScale,
		})
	})
	return res, nil
}
