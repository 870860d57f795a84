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
		o.groups = append(o.groups, group{lo: a - lo, hi: b - lo, decay: decay})
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

// NewAdamWRanges allocates the optimizer state of the arena ranges ranges
// (sorted, disjoint) of parameters laid out by specs: their moments, one
// range after another. Step it with StepRanges on the whole arena.
func NewAdamWRanges(dev engine.Device, specs []engine.ParamSpec, ranges [][2]int, cfg AdamWConfig) (*AdamW, error) {
	if cfg == (AdamWConfig{}) {
		cfg = DefaultAdamW
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n, at := 0, 0
	for _, rg := range ranges {
		if rg[0] < at || rg[1] < rg[0] {
			return nil, fmt.Errorf("adamw: shard ranges %v are not sorted and disjoint", ranges)
		}
		n, at = n+rg[1]-rg[0], rg[1]
	}
	o := &AdamW{Config: cfg, M: dev.Alloc(n), V: dev.Alloc(n)}
	state := 0
	for r, rg := range ranges {
		shift := rg[0] - state
		for _, s := range specs {
			a, b := max(s.Offset, rg[0]), min(s.Offset+s.Size(), rg[1])
			if a >= b {
				continue
			}
			decay := s.Decay || cfg.DecayAll
			if k := len(o.groups); k > 0 && o.groups[k-1].decay == decay && o.groups[k-1].hi == a-shift && o.groups[k-1].rng == r {
				o.groups[k-1].hi = b - shift
				continue
			}
			o.groups = append(o.groups, group{lo: a - shift, hi: b - shift, decay: decay, shift: shift, rng: r})
		}
		state += rg[1] - rg[0]
	}
	return o, nil
}

// StepRanges is Step for an optimizer made by NewAdamWRanges: params,
// grads and p16 (the bf16 copy, or nil) are whole arenas, of which it
// updates only its ranges; norm is the whole gradient's norm (for
// clipping, as one process would clip).
func (o *AdamW) StepRanges(dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64) (StepResult, error) {
	if len(grads) != len(params) || (p16 != nil && len(p16) != len(params)) {
		return StepResult{}, fmt.Errorf("adamw: %d parameters stepped with %d gradients, %d bf16 weights", len(params), len(grads), len(p16))
	}
	if k := len(o.groups); k > 0 && o.groups[k-1].hi+o.groups[k-1].shift > len(params) {
		return StepResult{}, fmt.Errorf("adamw: shard ranges reach past the %d parameters", len(params))
	}
	return o.step(dev, params, grads, p16, norm, lr)
}

// StepRangesEach is StepRanges telling done each range's index (in the
// order given to NewAdamWRanges) as soon as it is updated, from the
// calling goroutine: a data-parallel rank sends an updated range while
// the optimizer updates the next.
func (o *AdamW) StepRangesEach(dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64, done func(k int)) (StepResult, error) {
	o.rangeDone = done
	defer func() { o.rangeDone = nil }()
	return o.StepRanges(dev, params, grads, p16, norm, lr)
}
