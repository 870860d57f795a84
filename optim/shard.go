package optim

import (
	"fmt"

	"hone/engine"
)

// NewAdamWRange allocates the optimizer state of one shard: the moments of
// arena range [lo, hi) of parameters laid out by specs, and only those
// (data-parallel ranks each update their own range, ZeRO stage 1 style).
// Step it with StepRange.
func NewAdamWRange(dev engine.Device, specs []engine.ParamSpec, lo, hi int, cfg AdamWConfig) (*AdamW, error) {
	if lo < 0 || hi < lo {
		return nil, fmt.Errorf("adamw: bad shard range [%d, %d)", lo, hi)
	}
	if cfg == (AdamWConfig{}) {
		cfg = DefaultAdamW
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &AdamW{Config: cfg, M: dev.Alloc(hi - lo), V: dev.Alloc(hi - lo)}
	for _, s := range specs {
		a, b := max(s.Offset, lo), min(s.Offset+s.Size(), hi)
		if a >= b {
			continue
		}
		decay := s.Decay || cfg.DecayAll
		if k := len(o.groups); k > 0 && o.groups[k-1].decay == decay && o.groups[k-1].hi == a-lo {
			o.groups[k-1].hi = b - lo
			continue
		}
		o.groups = append(o.groups, group{a - lo, b - lo, decay})
	}
	return o, nil
}

// StepRange is Step for an optimizer made by NewAdamWRange: params and
// grads are the shard's range, norm the norm of the whole gradient (for
// clipping, as one process would clip). The caller refreshes any
// low-precision weight copy (engine.Model.ParamsChanged).
func (o *AdamW) StepRange(dev engine.Device, params, grads []float32, norm, lr float64) (StepResult, error) {
	if len(params) != len(o.M) || len(grads) != len(o.M) {
		return StepResult{}, fmt.Errorf("adamw: shard of %d parameters stepped with %d parameters, %d gradients", len(o.M), len(params), len(grads))
	}
	return o.step(dev, params, grads, nil, norm, lr)
}
