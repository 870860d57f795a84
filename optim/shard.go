package optim

import (
	"fmt"
	"math"

	"hone/engine"
)

// layout is where an optimizer's state lies in the arrays it steps: its
// groups, and, during StepRangesEach, whom to tell of each range updated.
// AdamW and LionW share it.
type layout struct {
	name   string // the optimizer's, for errors
	groups []group
	size   int // floats of each state buffer
	// rangeDone, during StepRangesEach, is told each range's index once
	// the step has updated it.
	rangeDone func(k int)
	first     int // the range a step updates first (UpdateFirst); the others follow in order
}

// group is a contiguous arena range sharing one decay setting.
type group struct {
	lo, hi int
	decay  bool
	// shift moves the group's parameters, gradients and bf16 copy to
	// [lo+shift, hi+shift) of the arrays stepped, its state staying at
	// [lo, hi); 0 when the state covers the whole arena.
	shift int
	rng   int // the index of the range the group is in
}

// newLayout lays out the state of the arena ranges ranges (sorted,
// disjoint) of parameters laid out by specs: one range after another, so
// a whole arena of n floats is the one range [0, n).
func newLayout(name string, specs []engine.ParamSpec, ranges [][2]int, decayAll bool) (layout, error) {
	l := layout{name: name}
	at := 0
	for _, rg := range ranges {
		if rg[0] < at || rg[1] < rg[0] {
			return l, fmt.Errorf("%s: shard ranges %v are not sorted and disjoint", name, ranges)
		}
		at = rg[1]
	}
	for r, rg := range ranges {
		shift := rg[0] - l.size
		for _, s := range specs {
			a, b := max(s.Offset, rg[0]), min(s.Offset+s.Size(), rg[1])
			if a >= b {
				continue
			}
			decay := s.Decay || decayAll
			if k := len(l.groups); k > 0 && l.groups[k-1].decay == decay && l.groups[k-1].hi == a-shift && l.groups[k-1].rng == r {
				l.groups[k-1].hi = b - shift
				continue
			}
			l.groups = append(l.groups, group{lo: a - shift, hi: b - shift, decay: decay, shift: shift, rng: r})
		}
		l.size += rg[1] - rg[0]
	}
	return l, nil
}

// each calls update with each group and its parameters, gradients and
// bf16 copy (nil when p16 is), those of range first before the others,
// telling rangeDone (when set) each range's index after its last group.
func (l *layout) each(params, grads []float32, p16 []uint16, update func(g group, p, gr []float32, p16 []uint16)) {
	for _, firsts := range []bool{true, false} {
		for i, g := range l.groups {
			if (g.rng == l.first) != firsts {
				continue
			}
			lo, hi := g.lo+g.shift, g.hi+g.shift
			var g16 []uint16
			if p16 != nil {
				g16 = p16[lo:hi]
			}
			update(g, params[lo:hi], grads[lo:hi], g16)
			if l.rangeDone != nil && (i == len(l.groups)-1 || l.groups[i+1].rng != g.rng) {
				l.rangeDone(g.rng)
			}
		}
	}
}

// stepRanges is StepRangesEach for the optimizer whose update is step.
func (l *layout) stepRanges(step stepFunc, dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64, done func(k int)) (StepResult, error) {
	if len(grads) != len(params) || (p16 != nil && len(p16) != len(params)) {
		return StepResult{}, fmt.Errorf("%s: %d parameters stepped with %d gradients, %d bf16 weights", l.name, len(params), len(grads), len(p16))
	}
	if k := len(l.groups); k > 0 && l.groups[k-1].hi+l.groups[k-1].shift > len(params) {
		return StepResult{}, fmt.Errorf("%s: shard ranges reach past the %d parameters", l.name, len(params))
	}
	l.rangeDone = done
	defer func() { l.rangeDone = nil }()
	return step(dev, params, grads, p16, norm, lr)
}

// NewAdamWRanges allocates the optimizer state of the arena ranges ranges
// (sorted, disjoint) of parameters laid out by specs: their moments, one
// range after another (data-parallel ranks each update their own, ZeRO
// style). Step it with StepRanges on the whole arena.
func NewAdamWRanges(dev engine.Device, specs []engine.ParamSpec, ranges [][2]int, cfg AdamWConfig) (*AdamW, error) {
	if cfg == (AdamWConfig{}) {
		cfg = DefaultAdamW
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lay, err := newLayout("adamw", specs, ranges, cfg.DecayAll)
	if err != nil {
		return nil, err
	}
	return &AdamW{Config: cfg, M: dev.Alloc(lay.size), V: dev.Alloc(lay.size), lay: lay}, nil
}

// StepRanges is Step for an optimizer made by NewAdamWRanges: params,
// grads and p16 (the bf16 copy, or nil) are whole arenas, of which it
// updates only its ranges; norm is the whole gradient's norm (for
// clipping, as one process would clip). Without p16 the caller refreshes
// any low-precision weight copy (engine.Model.ParamsChanged).
func (o *AdamW) StepRanges(dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64) (StepResult, error) {
	return o.StepRangesEach(dev, params, grads, p16, norm, lr, nil)
}

// StepRangesEach is StepRanges telling done (when not nil) each range's
// index (in the order given to NewAdamWRanges) as soon as it is updated,
// from the calling goroutine: a data-parallel rank sends an updated range
// while the optimizer updates the next.
func (o *AdamW) StepRangesEach(dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64, done func(k int)) (StepResult, error) {
	return o.lay.stepRanges(o.step, dev, params, grads, p16, norm, lr, done)
}

// UpdateFirst makes every step update range k (an index into the ranges
// given to NewAdamWRanges) before the others, so that StepRangesEach's
// done hears of it first; the results are the same (the update is
// elementwise).
func (o *AdamW) UpdateFirst(k int) { o.lay.first = k }

// NewLionWRanges is NewAdamWRanges for LionW (its one moment); peak is
// the schedule's peak learning rate.
func NewLionWRanges(dev engine.Device, specs []engine.ParamSpec, ranges [][2]int, cfg LionWConfig, peak float64) (*LionW, error) {
	if cfg == (LionWConfig{}) {
		cfg = DefaultLionW
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !(peak > 0) || math.IsInf(peak, 0) {
		return nil, fmt.Errorf("lionw: peak learning rate %g is not positive", peak)
	}
	lay, err := newLayout("lionw", specs, ranges, cfg.DecayAll)
	if err != nil {
		return nil, err
	}
	return &LionW{Config: cfg, M: dev.Alloc(lay.size), Peak: peak, lay: lay}, nil
}

// StepRanges is AdamW.StepRanges for an optimizer made by NewLionWRanges.
func (o *LionW) StepRanges(dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64) (StepResult, error) {
	return o.StepRangesEach(dev, params, grads, p16, norm, lr, nil)
}

// StepRangesEach is AdamW.StepRangesEach for an optimizer made by
// NewLionWRanges.
func (o *LionW) StepRangesEach(dev engine.Device, params, grads []float32, p16 []uint16, norm, lr float64, done func(k int)) (StepResult, error) {
	return o.lay.stepRanges(o.step, dev, params, grads, p16, norm, lr, done)
}

// UpdateFirst is AdamW.UpdateFirst for an optimizer made by
// NewLionWRanges.
func (o *LionW) UpdateFirst(k int) { o.lay.first = k }
