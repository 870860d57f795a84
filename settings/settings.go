// Package settings is the one home of a fine-tuning run's settings: their
// defaults, their valid ranges and their one-line help. The run service
// (runs.Create), the CLI (hone create), the trainer (train.Spec) and the
// optimizer (optim) all read them from here, so they cannot drift apart.
//
// Settings are named as the API names them ("learning_rate",
// "optimizer.weight_decay"). Every check returns an *Error that names the
// setting, says what is wrong with the value and how to fix it. The package
// has no state; everything in it is safe for concurrent use.
package settings

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"hone/engine"
)

// Defaults: the value a run uses for a setting it leaves unset.
const (
	Duration        = "1ep"
	LearningRate    = 1e-5 // a conservative peak for full fine-tuning with AdamW
	BatchRows       = 1
	GradAccum       = 1
	CheckpointEvery = 0 // 0: a checkpoint at each epoch end only
	KeepCheckpoints = 3
	Precision       = "fp32"

	WarmupFrac  = 0.02     // of the run's optimizer steps, rounded up
	Decay       = "linear" // after warmup
	FinalLRMult = 0.0      // the learning rate ends at LearningRate·FinalLRMult

	// AdamW: torch.optim.AdamW's defaults, with clipping at 1.0.
	Beta1       = 0.9
	Beta2       = 0.999
	Eps         = 1e-8
	WeightDecay = 0.01 // matrices only: norms and biases never decay
	MaxGradNorm = 1.0  // 0 turns clipping off

	Method = "full" // "lora" trains a low-rank adapter on a frozen base

	// LoRA: PEFT's usual settings for instruction tuning.
	LoRARank    = 16
	LoRAAlpha   = 32.0
	LoRADropout = 0.05
)

// MaxLoRARank bounds a LoRA rank; a rank near the projections' width is
// full fine-tuning at a higher cost.
const MaxLoRARank = 1024

// MaxEpochs bounds a duration given in epochs.
const MaxEpochs = 1000

// The accepted names, the default first.
var (
	decays     = []string{"linear", "cosine", "constant"}
	precisions = []string{"fp32", "bf16"}
	methods    = []string{"full", "lora"}
)

// Methods are the accepted training methods, the default first.
func Methods() []string { return slices.Clone(methods) }

// LoRATargets are the projections LoRA adapts by default in a Llama or
// Mistral model: all that hone can adapt there. Mixtral and DBRX have
// their own (engine.Config.DefaultLoRATargets).
func LoRATargets() []string { return slices.Clone(engine.LoRATargets) }

// Decays are the accepted learning-rate decays, the default first.
func Decays() []string { return slices.Clone(decays) }

// Precisions are the accepted precisions, the default first.
func Precisions() []string { return slices.Clone(precisions) }

// Error is a setting that cannot be used.
type Error struct {
	Setting string // API name, e.g. "optimizer.weight_decay"
	Problem string // what is wrong with the value
	Fix     string // how to fix it
}

func (e *Error) Error() string { return e.Setting + ": " + e.Problem + "; " + e.Fix }

func errorf(setting, fix, format string, a ...any) error {
	return &Error{Setting: setting, Problem: fmt.Sprintf(format, a...), Fix: fix}
}

// Help is the one-line description of a setting for the CLI's flags and
// the API documentation; the flag package prints the default after it.
func Help(setting string) string { return help[setting] }

var help = map[string]string{
	"training_duration": `"3ep" epochs, "500ba" optimizer steps, "2_000_000tok" tokens`,
	"learning_rate":     "peak learning rate, in (0, 1]",
	"context_length":    "tokens per training row (0: the model's maximum, shortened to the longest that fits in memory)",
	"batch_rows":        "rows per micro-batch",
	"grad_accum":        "micro-batches per optimizer step",
	"checkpoint_every":  "optimizer steps between checkpoints (0: at each epoch end only)",
	"keep_checkpoints":  "newest checkpoints kept on disk (at least 1, so a run can resume)",
	"seed":              "random seed of the data order, the eval split and eval-prompt sampling",
	"precision":         "fp32 or bf16 (bf16 matrix products, fp32 master weights)",

	"method":       "full (every weight trains) or lora (a low-rank adapter trains; the base stays frozen)",
	"lora.rank":    "LoRA rank r of each adapter pair, in [1, 1024]",
	"lora.alpha":   "LoRA alpha: the adapter's output is scaled by alpha/r (alpha/sqrt(r) with use_rslora)",
	"lora.dropout": "dropout on the adapter's input while training, in [0, 1)",
	"lora.target_modules": "modules to adapt (unset: the model's defaults): Llama/Mistral " + strings.Join(engine.LoRATargets, ", ") +
		"; Mixtral q_proj, k_proj, v_proj, o_proj, gate (router), w1, w2, w3 (default all but gate); DBRX Wqkv, out_proj, layer (router) (default Wqkv, out_proj)",
	"lora.use_rslora":          "scale by alpha/sqrt(r) (rank-stabilised LoRA) instead of alpha/r",
	"lora.quantize_base":       "hold the frozen base in this format while training: nf4 (QLoRA: 4-bit NormalFloat, blocks of 64, double-quantized scales); the result merges into the unquantized base",
	"lora.quantize_embeddings": "with quantize_base nf4: hold the token embeddings and output head in NF4 too (QLoRA keeps them unquantized): about 1.5 GB less on an 8B model, a little less precise",
	"adapter_path":             "PEFT adapter directory to continue training (method lora); its config sets rank and targets",
	"register_adapter":         "register the LoRA adapter alone (it names its base version) instead of the merged model",

	"optimizer.warmup_frac":   "fraction of the steps with linear warmup, in [0, 1) (0: no warmup)",
	"optimizer.decay":         "learning-rate decay after warmup: " + strings.Join(decays, ", "),
	"optimizer.final_lr_mult": "learning-rate multiplier reached at the end, in [0, 1] (linear and cosine decay)",
	"optimizer.beta1":         "AdamW beta1, in [0, 1)",
	"optimizer.beta2":         "AdamW beta2, in [0, 1)",
	"optimizer.eps":           "AdamW epsilon, positive",
	"optimizer.weight_decay":  "AdamW decoupled weight decay of matrices; norms and biases never decay (0: none)",
	"optimizer.max_grad_norm": "clip the global gradient L2 norm to this (0: no clipping)",
}

// CheckLearningRate reports a peak learning rate outside (0, 1].
func CheckLearningRate(v float64) error {
	if !(v > 0) || v > 1 {
		return errorf("learning_rate", fmt.Sprintf("use a value in (0, 1]; unset means %g", LearningRate),
			"%g is outside (0, 1]", v)
	}
	return nil
}

// CheckCount reports an integer setting below min.
func CheckCount(setting string, v, min int) error {
	if v < min {
		return errorf(setting, fmt.Sprintf("use %d or more", min), "%d is less than %d", v, min)
	}
	return nil
}

// CheckPrecision reports an unknown precision.
func CheckPrecision(v string) error { return oneOf("precision", v, precisions) }

// CheckDecay reports an unknown learning-rate decay.
func CheckDecay(v string) error { return oneOf("optimizer.decay", v, decays) }

// CheckWarmupFrac reports a warmup fraction outside [0, 1).
func CheckWarmupFrac(v float64) error {
	if !(v >= 0 && v < 1) {
		return errorf("optimizer.warmup_frac", "use a fraction of the run's steps in [0, 1), e.g. 0.02; 0 means no warmup",
			"%g is outside [0, 1)", v)
	}
	return nil
}

// CheckFinalLRMult reports a final multiplier outside [0, 1], or one that
// the decay would ignore.
func CheckFinalLRMult(v float64, decay string) error {
	const s = "optimizer.final_lr_mult"
	if !(v >= 0 && v <= 1) {
		return errorf(s, "use a multiplier in [0, 1], e.g. 0.1 to end at a tenth of the peak", "%g is outside [0, 1]", v)
	}
	if v != 0 && decay == "constant" {
		return errorf(s, "leave it unset, or choose linear or cosine decay", "%g has no effect with constant decay", v)
	}
	return nil
}

// CheckBeta reports an AdamW beta ("optimizer.beta1" or "optimizer.beta2")
// outside [0, 1).
func CheckBeta(setting string, v float64) error {
	if !(v >= 0 && v < 1) {
		return errorf(setting, "use a value in [0, 1), e.g. 0.9 for beta1 or 0.999 for beta2", "%g is outside [0, 1)", v)
	}
	return nil
}

// CheckEps reports an AdamW epsilon that is not positive and finite.
func CheckEps(v float64) error {
	if !(v > 0) || math.IsInf(v, 0) {
		return errorf("optimizer.eps", fmt.Sprintf("use a small positive value; unset means %g", Eps), "%g is not positive", v)
	}
	return nil
}

// CheckWeightDecay reports a negative or non-finite weight decay.
func CheckWeightDecay(v float64) error {
	if !(v >= 0) || math.IsInf(v, 0) {
		return errorf("optimizer.weight_decay", fmt.Sprintf("use 0 for no decay or a positive value; unset means %g", WeightDecay),
			"%g is not a non-negative number", v)
	}
	return nil
}

// CheckMaxGradNorm reports a negative or non-finite clipping threshold.
func CheckMaxGradNorm(v float64) error {
	if !(v >= 0) || math.IsInf(v, 0) {
		return errorf("optimizer.max_grad_norm", fmt.Sprintf("use 0 for no clipping or a positive norm; unset means %g", MaxGradNorm),
			"%g is not a non-negative number", v)
	}
	return nil
}

func oneOf(setting, v string, names []string) error {
	if !slices.Contains(names, v) {
		return errorf(setting, "use one of "+strings.Join(names, ", "), "%q is not a known value", v)
	}
	return nil
}

// CheckMethod reports an unknown training method.
func CheckMethod(v string) error { return oneOf("method", v, methods) }

// CheckLoRARank reports a rank outside [1, MaxLoRARank].
func CheckLoRARank(v int) error {
	if v < 1 || v > MaxLoRARank {
		return errorf("lora.rank", fmt.Sprintf("use a rank in [1, %d], e.g. 8, 16 or 64; unset means %d", MaxLoRARank, LoRARank),
			"%d is outside [1, %d]", v, MaxLoRARank)
	}
	return nil
}

// CheckLoRAAlpha reports an alpha that is not positive and finite.
func CheckLoRAAlpha(v float64) error {
	if !(v > 0) || math.IsInf(v, 0) {
		return errorf("lora.alpha", fmt.Sprintf("use a positive value, often twice the rank; unset means %g", LoRAAlpha),
			"%g is not positive", v)
	}
	return nil
}

// CheckLoRADropout reports a dropout probability outside [0, 1).
func CheckLoRADropout(v float64) error {
	if !(v >= 0 && v < 1) {
		return errorf("lora.dropout", fmt.Sprintf("use a probability in [0, 1), 0 for none; unset means %g", LoRADropout),
			"%g is outside [0, 1)", v)
	}
	return nil
}

// CheckQuantizeBase reports a lora.quantize_base other than "" and nf4.
func CheckQuantizeBase(v string) error {
	if v != "" && v != engine.QuantizeNF4 {
		return errorf("lora.quantize_base", `use "nf4" (QLoRA), or leave it unset to keep the base unquantized`, "%q is not a base quantization hone has", v)
	}
	return nil
}

// CheckLoRATargets reports an empty target list, a repeated target, or a
// name that is not a projection hone adapts.
func CheckLoRATargets(v []string) error {
	const s = "lora.target_modules"
	fix := "use module names from " + strings.Join(engine.LoRAModuleNames, ", ") + " (those the model has), or leave it unset for the model's defaults"
	if len(v) == 0 {
		return errorf(s, fix, "the list is empty")
	}
	for i, t := range v {
		if !slices.Contains(engine.LoRAModuleNames, t) {
			return errorf(s, fix, "%q is not a projection hone adapts", t)
		}
		if slices.Contains(v[:i], t) {
			return errorf(s, "name each projection once", "%q is repeated", t)
		}
	}
	return nil
}

// CheckLoRAOnly reports a LoRA setting given to a run whose method is not
// lora, so it is not silently ignored.
func CheckLoRAOnly(setting, method string) error {
	return errorf(setting, `set method to "lora", or remove it`, "it applies only to method lora, and the method is %q", method)
}
