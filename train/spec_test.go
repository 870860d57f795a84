package train_test

import (
	"strings"
	"testing"

	"hone/optim"
	"hone/settings"
	"hone/train"
)

// An empty spec resolves to package settings' defaults; the trainer has
// none of its own.
func TestResolveDefaults(t *testing.T) {
	s, err := train.Spec{}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	dur, _ := train.ParseDuration(settings.Duration)
	if s.Duration != dur || s.LearningRate != settings.LearningRate || s.BatchRows != settings.BatchRows ||
		s.GradAccum != settings.GradAccum || s.KeepCheckpoints != settings.KeepCheckpoints ||
		s.CheckpointEvery != settings.CheckpointEvery || s.Precision != settings.Precision || s.Decay != settings.Decay ||
		s.FinalLRMult != settings.FinalLRMult || s.WarmupFrac == nil || *s.WarmupFrac != settings.WarmupFrac {
		t.Fatalf("Spec{}.Resolve() = %+v, want package settings' defaults", s)
	}
	want := optim.AdamWConfig{Beta1: settings.Beta1, Beta2: settings.Beta2, Eps: settings.Eps,
		WeightDecay: settings.WeightDecay, MaxGradNorm: settings.MaxGradNorm}
	if s.AdamW != want {
		t.Fatalf("Spec{}.Resolve().AdamW = %+v, want %+v", s.AdamW, want)
	}
}

// Zero is a setting, not "unset", where users want it: no warmup, no
// weight decay, no clipping.
func TestResolveKeepsChosenZeros(t *testing.T) {
	zero := 0.0
	a := optim.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8}
	s, err := train.Spec{WarmupFrac: &zero, AdamW: a, Decay: "constant"}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if *s.WarmupFrac != 0 || s.AdamW != a || s.Decay != "constant" {
		t.Fatalf("Resolve() = warmup %v, AdamW %+v, decay %q; want 0, %+v, constant", *s.WarmupFrac, s.AdamW, s.Decay, a)
	}
}

func TestResolveNamesTheSetting(t *testing.T) {
	neg, one := -0.5, 1.0
	for _, tc := range []struct {
		spec train.Spec
		want string
	}{
		{train.Spec{LearningRate: 3}, "learning_rate: 3 is outside (0, 1]"},
		{train.Spec{ContextLength: -1}, "context_length: -1 is less than 0"},
		{train.Spec{BatchRows: -2}, "batch_rows: -2 is less than 1"},
		{train.Spec{GradAccum: -1}, "grad_accum"},
		{train.Spec{CheckpointEvery: -1}, "checkpoint_every"},
		{train.Spec{KeepCheckpoints: -1}, "keep_checkpoints"},
		{train.Spec{Precision: "fp8"}, `precision: "fp8" is not a known value; use one of fp32, bf16`},
		{train.Spec{Decay: "step"}, `optimizer.decay: "step" is not a known value; use one of linear, cosine, constant`},
		{train.Spec{WarmupFrac: &neg}, "optimizer.warmup_frac"},
		{train.Spec{WarmupFrac: &one}, "optimizer.warmup_frac"},
		{train.Spec{FinalLRMult: 0.5, Decay: "constant"}, "optimizer.final_lr_mult: 0.5 has no effect with constant decay"},
		{train.Spec{AdamW: optim.AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: -1}}, "optimizer.weight_decay"},
		{train.Spec{AdamW: optim.AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, MaxGradNorm: -1}}, "optimizer.max_grad_norm"},
		{train.Spec{AdamW: optim.AdamWConfig{WeightDecay: 0.1}}, "optimizer.eps: 0 is not positive"},
	} {
		_, err := tc.spec.Resolve()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Resolve(%+v) = %v, want an error containing %q", tc.spec, err, tc.want)
		}
	}
}

// A spec's method defaults to full; method lora takes package settings'
// LoRA defaults, keeps a chosen dropout of 0, and a full run carrying LoRA
// settings is refused, naming them.
func TestResolveLoRA(t *testing.T) {
	s, err := train.Spec{}.Resolve()
	if err != nil || s.Method != settings.Method || s.LoRA != nil {
		t.Fatalf("Spec{}.Resolve() method %q, lora %+v (%v); want %q and none", s.Method, s.LoRA, err, settings.Method)
	}
	s, err = train.Spec{Method: "lora"}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if l := s.LoRA; l.Rank != settings.LoRARank || l.Alpha != settings.LoRAAlpha || *l.Dropout != settings.LoRADropout ||
		strings.Join(l.Targets, ",") != strings.Join(settings.LoRATargets(), ",") || l.RSLoRA {
		t.Fatalf("lora defaults %+v", *l)
	}
	zero := 0.0
	s, err = train.Spec{Method: "lora", LoRA: &train.LoRASpec{Dropout: &zero, Rank: 4}}.Resolve()
	if err != nil || *s.LoRA.Dropout != 0 || s.LoRA.Rank != 4 {
		t.Fatalf("lora dropout 0, rank 4: %+v (%v)", s.LoRA, err)
	}
	bad := 1.5
	for _, tc := range []struct {
		spec train.Spec
		want string
	}{
		{train.Spec{Method: "qlora"}, `method: "qlora" is not a known value; use one of full, lora`},
		{train.Spec{LoRA: &train.LoRASpec{Rank: 8}}, `lora: it applies only to method lora`},
		{train.Spec{Adapter: "/a"}, `adapter_path: it applies only to method lora`},
		{train.Spec{AdapterOnly: true}, `register_adapter: it applies only to method lora`},
		{train.Spec{Method: "lora", LoRA: &train.LoRASpec{Rank: -1}}, "lora.rank: -1 is outside [1, 1024]"},
		{train.Spec{Method: "lora", LoRA: &train.LoRASpec{Alpha: -2}}, "lora.alpha"},
		{train.Spec{Method: "lora", LoRA: &train.LoRASpec{Dropout: &bad}}, "lora.dropout: 1.5 is outside [0, 1)"},
		{train.Spec{Method: "lora", LoRA: &train.LoRASpec{Targets: []string{"q_proj", "qkv_proj"}}}, `lora.target_modules: "qkv_proj" is not a projection`},
		{train.Spec{Method: "lora", InitWeights: "/w"}, "custom_weights_path"},
	} {
		if _, err := tc.spec.Resolve(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Resolve(%+v) = %v, want an error containing %q", tc.spec, err, tc.want)
		}
	}
}

func TestParseDurationRefusal(t *testing.T) {
	for _, in := range []string{"3 weeks", "0ep", "1001ep", "-5ba", "ba", "1.5ba"} {
		_, err := train.ParseDuration(in)
		if err == nil || !strings.HasPrefix(err.Error(), "training_duration: ") || !strings.Contains(err.Error(), "e.g. 3ep") {
			t.Errorf("ParseDuration(%q) = %v, want an error naming training_duration with examples", in, err)
		}
	}
}
