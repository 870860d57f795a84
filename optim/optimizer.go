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
