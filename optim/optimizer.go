package optim

import "hone/engine"

// Optimizer is what the trainer needs of an optimizer: AdamW or LionW.
type Optimizer interface {
	// Step clips m's gradients and updates its parameters at learning
	// rate lr; StepAdapter does the same for a LoRA adapter's.
	Step(m *engine.Model, lr float64) (StepResult, error)
	StepAdapter(a *engine.Adapter, lr float64) (StepResult, error)
	// State is the optimizer's per-parameter state as checkpoints hold it,
	// named as torch names it; restoring it and SetStepCount resumes exactly.
	State() []State
	StepCount() int
	SetStepCount(n int)
	// String describes the configuration for a run's log.
	String() string
}

// RangeOptimizer is an optimizer of ranges of a parameter arena
// (NewAdamWRanges, NewLionWRanges): a data-parallel rank's shard.
type RangeOptimizer interface {
	Optimizer
	// StepRangesEach updates the optimizer's ranges of params (and of
	// p16, the bf16 copy, when not nil), whole arenas, from grads, clipping
	// by norm, the whole gradient's norm, and tells done (when not nil)
	// each range's index as soon as it is updated.
	StepRangesEach(dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64, done func(k int)) (StepResult, error)
	// UpdateFirst makes every step update range k before the others.
	UpdateFirst(k int)
}

// NewRanges makes the RangeOptimizer of the arena ranges ranges (sorted,
// disjoint) of parameters laid out by specs.
type NewRanges func(dev engine.Device, specs []engine.ParamSpec, ranges [][2]int) (RangeOptimizer, error)

// AdamWRanges is NewAdamWRanges with cfg.
func AdamWRanges(cfg AdamWConfig) NewRanges {
	return func(dev engine.Device, specs []engine.ParamSpec, ranges [][2]int) (RangeOptimizer, error) {
		o, err := NewAdamWRanges(dev, specs, ranges, cfg)
		if err != nil {
			return nil, err
		}
		return o, nil
	}
}

// LionWRanges is NewLionWRanges with cfg and peak.
func LionWRanges(cfg LionWConfig, peak float64) NewRanges {
	return func(dev engine.Device, specs []engine.ParamSpec, ranges [][2]int) (RangeOptimizer, error) {
		o, err := NewLionWRanges(dev, specs, ranges, cfg, peak)
		if err != nil {
			return nil, err
		}
		return o, nil
	}
}

// State is one named per-parameter buffer, laid out like the trained
// parameters, on the model's device.
type State struct {
	Name string
	Buf  []float32
}

func (o *AdamW) State() []State     { return []State{{"exp_avg", o.M}, {"exp_avg_sq", o.V}} }
func (o *AdamW) StepCount() int     { return o.Steps }
func (o *AdamW) SetStepCount(n int) { o.Steps = n }
func (o *AdamW) String() string     { return o.Config.String() }
func (o *LionW) State() []State     { return []State{{"exp_avg", o.M}} }
func (o *LionW) StepCount() int     { return o.Steps }
func (o *LionW) SetStepCount(n int) { o.Steps = n }
func (o *LionW) String() string     { return o.Config.String() }

// clipScale is the factor that clips a gradient of global norm norm to
// max (0: no clipping), as torch.nn.utils.clip_grad_norm_.
func clipScale(norm, max float64) (float32, bool) {
	if max > 0 && norm > max {
		return float32(max / (norm + 1e-6)), true
	}
	return 1, false
}
