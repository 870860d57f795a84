package settings

import (
	"fmt"
	"math"
	"strings"
)

// Optimizers: AdamW (the default) and LionW, the hosted product's
// optimizer for full fine-tuning (composer's DecoupledLionW).
const (
	Optimizer = "adamw"

	// LionWLearningRate is the product's documented peak for full
	// fine-tuning with LionW.
	LionWLearningRate = 5e-7
	// LionWLoRALearningRate is LearningRate/10 for a LoRA run with LionW:
	// a sign update has a larger norm than Adam's, so Lion wants a rate
	// 3–10× lower than AdamW's (Chen et al., 2023).
	LionWLoRALearningRate = LearningRate / 10
	// LionW betas are DecoupledLionW's defaults; its weight decay is 0 by
	// default because it is not scaled by the learning rate (only by the
	// schedule's multiplier), so a value sized for AdamW would be far too
	// strong.
	LionWBeta1       = 0.9
	LionWBeta2       = 0.99
	LionWWeightDecay = 0.0
)

var optimizers = []string{"adamw", "lionw"}

func init() {
	// The betas and the weight decay serve both optimizers: their help says
	// how LionW reads them (the flags show AdamW's defaults).
	help["optimizer.beta1"] = fmt.Sprintf("beta1, in [0, 1) (AdamW; LionW's interpolation of its update, default %g)", LionWBeta1)
	help["optimizer.beta2"] = fmt.Sprintf("beta2, in [0, 1) (AdamW; LionW's moment decay, default %g)", LionWBeta2)
	help["optimizer.weight_decay"] = fmt.Sprintf("decoupled weight decay of matrices; norms and biases never decay (0: none; LionW: in [0, 1), default %g, scaled by the schedule only)", LionWWeightDecay)
	help["optimizer.name"] = "optimizer: " + strings.Join(optimizers, ", ") +
		fmt.Sprintf(" (LionW: one moment, half AdamW's state; default learning rate %g full, %g LoRA; betas %g, %g; weight decay %g, scaled by the schedule only)",
			LionWLearningRate, LionWLoRALearningRate, LionWBeta1, LionWBeta2, LionWWeightDecay)
}

// Optimizers are the accepted optimizer names, the default first.
func Optimizers() []string { return append([]string(nil), optimizers...) }

// CheckOptimizer reports an unknown optimizer name.
func CheckOptimizer(v string) error { return oneOf("optimizer.name", v, optimizers) }

// CheckLionWWeightDecay reports a LionW weight decay outside [0, 1): each
// step multiplies the weights by 1 − (lr/peak)·weight_decay, so 1 or more
// would zero or flip them.
func CheckLionWWeightDecay(v float64) error {
	if !(v >= 0 && v < 1) || math.IsInf(v, 0) {
		return errorf("optimizer.weight_decay", "use 0 for no decay or a small value such as 1e-4 (LionW multiplies the weights by 1 − weight_decay each step at the peak rate)",
			"%g is outside [0, 1) for lionw", v)
	}
	return nil
}

// CheckAdamWOnly reports a setting that LionW has no use for, so it is
// not silently ignored.
func CheckAdamWOnly(setting, optimizer string) error {
	return errorf(setting, `remove it, or set optimizer.name to "adamw"`, "it applies only to AdamW, and the optimizer is %q", optimizer)
}
