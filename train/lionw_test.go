package train_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/optim"
	"hone/safetensors"
	"hone/settings"
	"hone/train"
)

// A LionW run (full, and LoRA) cancelled twice and resumed ends with
// byte-equal weights to an uninterrupted run's: its checkpoints hold its
// one moment, and nothing else of an optimizer.
func TestLionWResumeIsExact(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	for _, method := range []string{"full", "lora"} {
		t.Run(method, func(t *testing.T) {
			s := spec(model, data)
			if method == "lora" {
				s = loraSpec(model, data)
			}
			s.Optimizer = "lionw"
			s.LearningRate = 1e-3
			s.LionW = &optim.LionWConfig{Beta1: 0.9, Beta2: 0.99, WeightDecay: 0.01, MaxGradNorm: 1}
			full, _ := checkResumeIsExact(t, s)
			ckpts, _ := filepath.Glob(filepath.Join(filepath.Dir(full.ModelDir), "checkpoints", "step-*", "optimizer.safetensors"))
			if len(ckpts) == 0 {
				t.Fatal("no checkpoint holds optimizer.safetensors")
			}
			f, err := safetensors.Open(ckpts[0])
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var names []string
			for _, ti := range f.Tensors() {
				names = append(names, ti.Name)
			}
			if !slices.Equal(names, []string{"exp_avg"}) {
				t.Fatalf("LionW checkpoint holds %v, want [exp_avg]", names)
			}
		})
	}
}

// A LionW run and an AdamW run of the same data and settings train
// differently (the optimizer is really switched), and the LionW run says
// so in its log.
func TestLionWRunDiffersFromAdamW(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	s := spec(model, data)
	s.Duration = train.Duration{Batches: 2}
	s.EvalData = ""
	adam, err := train.Run(context.Background(), s, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Optimizer = "lionw"
	var logs []string
	lion, err := train.Run(context.Background(), s, t.TempDir(), logObserver{logs: &logs})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(adam.ModelDir, "model.safetensors"))
	b, _ := os.ReadFile(filepath.Join(lion.ModelDir, "model.safetensors"))
	if len(a) == 0 || string(a) == string(b) {
		t.Fatal("the LionW run's weights equal the AdamW run's")
	}
	if !slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "optimizer: LionW beta1 0.9, beta2 0.99") }) {
		t.Errorf("the run's log does not name LionW: %q", logs)
	}
}

type logObserver struct {
	train.NopObserver
	logs *[]string
}

func (o logObserver) OnLog(s string) { *o.logs = append(*o.logs, s) }

// Resolve gives a LionW run the product's learning rate (5e-7 full) and
// LionW's defaults, and refuses a bad optimizer name, LionW settings on an
// AdamW run and a weight decay LionW cannot use.
func TestLionWResolve(t *testing.T) {
	s, err := train.Spec{Optimizer: "lionw"}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.LearningRate != 5e-7 || s.LionW == nil || *s.LionW != optim.DefaultLionW {
		t.Fatalf("resolved LionW spec: learning rate %g, LionW %+v", s.LearningRate, s.LionW)
	}
	l, err := train.Spec{Optimizer: "lionw", Method: "lora"}.Resolve()
	if err != nil || l.LearningRate != settings.LionWLoRALearningRate {
		t.Fatalf("LoRA LionW learning rate %g (%v), want %g", l.LearningRate, err, settings.LionWLoRALearningRate)
	}
	if a, _ := (train.Spec{}).Resolve(); a.Optimizer != "adamw" || a.LearningRate != settings.LearningRate || a.LionW != nil {
		t.Fatalf("default spec: optimizer %q, learning rate %g, LionW %+v", a.Optimizer, a.LearningRate, a.LionW)
	}
	for _, tc := range []struct {
		spec train.Spec
		want string
	}{
		{train.Spec{Optimizer: "lion"}, "optimizer.name"},
		{train.Spec{Optimizer: "adamw", LionW: &optim.LionWConfig{Beta1: 0.9}}, "LionW settings"},
		{train.Spec{Optimizer: "lionw", LionW: &optim.LionWConfig{Beta1: 0.9, Beta2: 0.99, WeightDecay: 1}}, "optimizer.weight_decay"},
		{train.Spec{Optimizer: "lionw", LionW: &optim.LionWConfig{Beta1: 1, Beta2: 0.99}}, "optimizer.beta1"},
	} {
		if _, err := tc.spec.Resolve(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Resolve(%+v) = %v, want an error naming %s", tc.spec, err, tc.want)
		}
	}
}
