package runs

import (
	"hone/client"
	"hone/optim"
	"hone/settings"
	"hone/train"
)

// optimizerSpec puts the request's optimizer and its settings in spec:
// AdamW's over its defaults, or LionW's over its own. A setting the
// chosen optimizer has no use for (eps for LionW) is refused, not ignored.
func optimizerSpec(o *client.Optimizer, spec *train.Spec) error {
	spec.Optimizer = o.Name
	if o.Name != "lionw" {
		spec.AdamW = optimizerConfig(o)
		return nil
	}
	if o.Eps != 0 {
		return settings.CheckAdamWOnly("optimizer.eps", o.Name)
	}
	l := optim.DefaultLionW
	for _, f := range []struct {
		dst *float64
		v   *float64
	}{{&l.Beta1, o.Beta1}, {&l.Beta2, o.Beta2}, {&l.WeightDecay, o.WeightDecay}, {&l.MaxGradNorm, o.MaxGradNorm}} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	spec.LionW = &l
	return nil
}

// showOptimizer is the optimizer a resolved spec trains with, as the API
// shows it: nil for AdamW at its defaults (as before optimizers were
// chosen), else its name and settings.
func showOptimizer(sp train.Spec, o *client.Optimizer) *client.Optimizer {
	if sp.Optimizer != "lionw" {
		return o
	}
	out := client.Optimizer{}
	if o != nil {
		out = *o
	}
	l := *sp.LionW
	out.Name, out.Beta1, out.Beta2, out.WeightDecay, out.MaxGradNorm = "lionw", &l.Beta1, &l.Beta2, &l.WeightDecay, &l.MaxGradNorm
	return &out
}
