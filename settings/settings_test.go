package settings_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"hone/settings"
)

func TestChecks(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, tc := range []struct {
		call    string
		err     error
		setting string // "" = accepted
	}{
		{"CheckLearningRate(1e-5)", settings.CheckLearningRate(1e-5), ""},
		{"CheckLearningRate(1)", settings.CheckLearningRate(1), ""},
		{"CheckLearningRate(0)", settings.CheckLearningRate(0), "learning_rate"},
		{"CheckLearningRate(2)", settings.CheckLearningRate(2), "learning_rate"},
		{"CheckLearningRate(NaN)", settings.CheckLearningRate(nan), "learning_rate"},
		{"CheckCount(batch_rows, 1, 1)", settings.CheckCount("batch_rows", 1, 1), ""},
		{"CheckCount(batch_rows, 0, 1)", settings.CheckCount("batch_rows", 0, 1), "batch_rows"},
		{"CheckCount(checkpoint_every, -1, 0)", settings.CheckCount("checkpoint_every", -1, 0), "checkpoint_every"},
		{"CheckPrecision(bf16)", settings.CheckPrecision("bf16"), ""},
		{"CheckSharding(, 1)", settings.CheckSharding("", 1), ""},
		{"CheckSharding(none, 0)", settings.CheckSharding("none", 0), ""},
		{"CheckSharding(parameters, 2)", settings.CheckSharding("parameters", 2), ""},
		{"CheckSharding(optimizer, 4)", settings.CheckSharding("optimizer", 4), ""},
		{"CheckSharding(parameters, 1)", settings.CheckSharding("parameters", 1), "sharding"},
		{"CheckSharding(optimizer, 0)", settings.CheckSharding("optimizer", 0), "sharding"},
		{"CheckSharding(zero3, 2)", settings.CheckSharding("zero3", 2), "sharding"},
		{"CheckQuantizeBase()", settings.CheckQuantizeBase(""), ""},
		{"CheckQuantizeBase(nf4)", settings.CheckQuantizeBase("nf4"), ""},
		{"CheckQuantizeBase(fp4)", settings.CheckQuantizeBase("fp4"), "lora.quantize_base"},
		{"CheckPrecision(fp16)", settings.CheckPrecision("fp16"), "precision"},
		{"CheckDecay(constant)", settings.CheckDecay("constant"), ""},
		{"CheckDecay(cosine)", settings.CheckDecay("cosine"), ""},
		{"CheckDecay(step)", settings.CheckDecay("step"), "optimizer.decay"},
		{"CheckWarmupFrac(0)", settings.CheckWarmupFrac(0), ""},
		{"CheckWarmupFrac(1)", settings.CheckWarmupFrac(1), "optimizer.warmup_frac"},
		{"CheckWarmupFrac(NaN)", settings.CheckWarmupFrac(nan), "optimizer.warmup_frac"},
		{"CheckFinalLRMult(0.1, cosine)", settings.CheckFinalLRMult(0.1, "cosine"), ""},
		{"CheckFinalLRMult(0, constant)", settings.CheckFinalLRMult(0, "constant"), ""},
		{"CheckFinalLRMult(0.1, constant)", settings.CheckFinalLRMult(0.1, "constant"), "optimizer.final_lr_mult"},
		{"CheckFinalLRMult(1.5, linear)", settings.CheckFinalLRMult(1.5, "linear"), "optimizer.final_lr_mult"},
		{"CheckBeta(beta1, 0)", settings.CheckBeta("optimizer.beta1", 0), ""},
		{"CheckBeta(beta2, 1)", settings.CheckBeta("optimizer.beta2", 1), "optimizer.beta2"},
		{"CheckEps(0)", settings.CheckEps(0), "optimizer.eps"},
		{"CheckEps(Inf)", settings.CheckEps(inf), "optimizer.eps"},
		{"CheckWeightDecay(0)", settings.CheckWeightDecay(0), ""},
		{"CheckWeightDecay(-0.01)", settings.CheckWeightDecay(-0.01), "optimizer.weight_decay"},
		{"CheckWeightDecay(NaN)", settings.CheckWeightDecay(nan), "optimizer.weight_decay"},
		{"CheckMaxGradNorm(0)", settings.CheckMaxGradNorm(0), ""},
		{"CheckMaxGradNorm(-1)", settings.CheckMaxGradNorm(-1), "optimizer.max_grad_norm"},
		{"CheckMaxGradNorm(Inf)", settings.CheckMaxGradNorm(inf), "optimizer.max_grad_norm"},
		{"CheckMethod(lora)", settings.CheckMethod("lora"), ""},
		{"CheckMethod(qlora)", settings.CheckMethod("qlora"), "method"},
		{"CheckLoRARank(1)", settings.CheckLoRARank(1), ""},
		{"CheckLoRARank(0)", settings.CheckLoRARank(0), "lora.rank"},
		{"CheckLoRARank(2048)", settings.CheckLoRARank(2048), "lora.rank"},
		{"CheckLoRAAlpha(16)", settings.CheckLoRAAlpha(16), ""},
		{"CheckLoRAAlpha(-1)", settings.CheckLoRAAlpha(-1), "lora.alpha"},
		{"CheckLoRAAlpha(NaN)", settings.CheckLoRAAlpha(nan), "lora.alpha"},
		{"CheckLoRADropout(0)", settings.CheckLoRADropout(0), ""},
		{"CheckLoRADropout(1)", settings.CheckLoRADropout(1), "lora.dropout"},
		{"CheckLoRADropout(NaN)", settings.CheckLoRADropout(nan), "lora.dropout"},
		{"CheckLoRATargets(q_proj,v_proj)", settings.CheckLoRATargets([]string{"q_proj", "v_proj"}), ""},
		{"CheckLoRATargets(lm_head)", settings.CheckLoRATargets([]string{"lm_head"}), "lora.target_modules"},
		{"CheckLoRATargets(q_proj,q_proj)", settings.CheckLoRATargets([]string{"q_proj", "q_proj"}), "lora.target_modules"},
		{"CheckLoRATargets()", settings.CheckLoRATargets([]string{}), "lora.target_modules"},
		{"CheckLoRAOnly(lora, full)", settings.CheckLoRAOnly("lora", "full"), "lora"},
	} {
		if tc.setting == "" {
			if tc.err != nil {
				t.Errorf("%s = %v, want nil", tc.call, tc.err)
			}
			continue
		}
		var e *settings.Error
		if !errors.As(tc.err, &e) {
			t.Errorf("%s = %v, want a *settings.Error", tc.call, tc.err)
			continue
		}
		// The message names the setting, what is wrong and how to fix it.
		if e.Setting != tc.setting || e.Problem == "" || e.Fix == "" || !strings.HasPrefix(e.Error(), tc.setting+": ") {
			t.Errorf("%s = %q (setting %q), want one naming %s with a problem and a fix", tc.call, e, e.Setting, tc.setting)
		}
	}
}

// Every setting the CLI shows has help, and the context help tells the
// dataset's real cap.
func TestHelp(t *testing.T) {
	for _, s := range []string{"training_duration", "learning_rate", "context_length", "batch_rows", "grad_accum",
		"checkpoint_every", "keep_checkpoints", "seed", "precision", "optimizer.warmup_frac", "optimizer.decay",
		"optimizer.final_lr_mult", "optimizer.beta1", "optimizer.beta2", "optimizer.eps", "optimizer.weight_decay",
		"optimizer.max_grad_norm", "method", "lora.rank", "lora.alpha", "lora.dropout", "lora.target_modules",
		"lora.use_rslora", "lora.quantize_base", "lora.quantize_embeddings", "adapter_path", "register_adapter", "nodes", "sharding"} {
		if settings.Help(s) == "" {
			t.Errorf("Help(%q) is empty", s)
		}
	}
	if h := settings.Help("context_length"); !strings.Contains(h, "maximum") || !strings.Contains(h, "fits in memory") {
		t.Errorf("Help(context_length) = %q, want it to say the default is the model's maximum, shortened to what fits in memory", h)
	}
	if h := settings.Help("optimizer.decay"); !strings.Contains(h, "constant") {
		t.Errorf("Help(optimizer.decay) = %q, want every accepted decay", h)
	}
}
