package train_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/engine"
	"hone/internal/testmodel"
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

// LionW full fine-tuning takes the steps of one process with its
// optimizer sharded (ZeRO-1; untied embeddings, which every rank updates)
// or its parameters sharded (ZeRO-3), and its checkpoints resume on
// another number of ranks and the other sharding: 2 ranks of one stopped
// after step 3 and resumed on 3 ranks of the other, and one process
// resumed from the ZeRO-3 checkpoint of step 3, end at the one-process
// run's weights and moment (up to a few sign flips, below). A resume that
// lost or misplaced the moment would move many weights by 2·lr (LionW's
// update is lr·sign(…)).
func TestShardedLionWMatchesOneProcess(t *testing.T) {
	model := t.TempDir()
	testmodel.Write(t, model, strings.Replace(testmodel.Llama3Tiny, `"tie_word_embeddings": true`, `"tie_word_embeddings": false`, 1), 1)
	s := spec(model, chatData(t))
	s.Duration = train.Duration{Batches: 6}
	s.BatchRows, s.GradAccum = 1, 4
	s.ContextLength = 128
	s.Precision, s.Threads, s.CheckpointEvery = "fp32", 1, 3
	s.EvalData = ""
	s.Optimizer, s.LearningRate = "lionw", 1e-3
	s.LionW = &optim.LionWConfig{Beta1: 0.9, Beta2: 0.99, WeightDecay: 0.1, MaxGradNorm: 1}
	rec := &recorder{}
	one := t.TempDir()
	if _, err := train.Run(context.Background(), s, one, rec); err != nil {
		t.Fatal(err)
	}
	cfg, err := engine.LoadConfig(model)
	if err != nil {
		t.Fatal(err)
	}
	n := int(cfg.NumParams())
	want := readState(t, filepath.Join(one, "checkpoints", "step-00000006"), cfg)
	check := func(name, ckpt string, losses []float64) {
		t.Helper()
		for i, l := range losses {
			if w := rec.steps[len(rec.steps)-len(losses)+i].Loss; math.Abs(l-w) > 1e-6*w {
				t.Errorf("%s: loss %.9g at its step %d, one process %.9g", name, l, i+1, w)
			}
		}
		got := readState(t, ckpt, cfg)
		for _, k := range []string{"params", "exp_avg"} {
			if len(got[k]) != n {
				t.Fatalf("%s: the checkpoint's %s holds %d values, want %d", name, k, len(got[k]), n)
			}
			// Summed in another order, the gradients flip the sign of
			// an update near 0 here and there (plain data parallelism
			// flips the same weights): a few weights may differ by lr.
			flips := 0
			for i := range want[k] {
				if d := math.Abs(float64(want[k][i]) - float64(got[k][i])); d > 1e-5 {
					if flips++; k != "params" || flips > 10 || d > 2*s.LearningRate {
						t.Fatalf("%s: %s[%d] is %v, one process's %v", name, k, i, got[k][i], want[k][i])
					}
				}
			}
		}
		if _, ok := got["exp_avg_sq"]; ok {
			t.Errorf("%s: a LionW checkpoint holds exp_avg_sq", name)
		}
	}
	for _, tc := range []struct{ name, first, then string }{
		{"zero1-then-zero3", "1", "3"},
		{"zero3-then-zero1", "3", "1"},
	} {
		base := t.TempDir()
		var losses []float64
		for _, run := range []struct {
			ranks int
			env   []string
		}{{2, []string{envStopAt + "=1:3", envShard + "=" + tc.first}}, {3, []string{envShard + "=" + tc.then}}} {
			outs, log, err := launch(t, s, run.ranks, base, run.env...)
			if err != nil {
				t.Fatalf("%s, %d ranks %v: %v\n%s", tc.name, run.ranks, run.env, err, log)
			}
			losses = append(losses, stepLosses(outs[0])...)
		}
		if len(losses) != 6 {
			t.Fatalf("%s: %d steps, want 6", tc.name, len(losses))
		}
		check(tc.name, filepath.Join(base, "rank-0", "checkpoints", "step-00000006"), losses)
		if tc.first != "3" {
			continue
		}
		// One process resumes from the ZeRO-3 checkpoint of step 3.
		alone := t.TempDir()
		from := filepath.Join(base, "rank-0", "checkpoints", "step-00000003")
		if err := os.CopyFS(filepath.Join(alone, "checkpoints", "step-00000003"), os.DirFS(from)); err != nil {
			t.Fatal(err)
		}
		rec2 := &recorder{}
		if _, err := train.Run(context.Background(), s, alone, rec2); err != nil {
			t.Fatal(err)
		}
		var l2 []float64
		for _, st := range rec2.steps {
			l2 = append(l2, st.Loss)
		}
		if len(l2) != 3 {
			t.Fatalf("one process resumed from a ZeRO-3 checkpoint: %d steps, want 3", len(l2))
		}
		check("one process from zero3", filepath.Join(alone, "checkpoints", "step-00000006"), l2)
	}
}

// readState reads a checkpoint's fp32 weights ("params") and optimizer
// state, sharded or whole, by name over the whole arena.
func readState(t *testing.T, ckpt string, cfg *engine.Config) map[string][]float32 {
	t.Helper()
	n := int(cfg.NumParams())
	out := map[string][]float32{}
	if _, err := os.Stat(filepath.Join(ckpt, "shards")); err == nil {
		for _, k := range []string{"params", "exp_avg", "exp_avg_sq"} {
			if _, err := os.Stat(filepath.Join(ckpt, "shards", fmt.Sprintf("%s-00000-of-%05d.safetensors", k, readManifest(t, ckpt).Ranks))); err == nil {
				out[k] = shardedState(t, ckpt, k, n)
			}
		}
		return out
	}
	p := make([]float32, n)
	for _, sp := range cfg.ParamSpecs() {
		copy(p[sp.Offset:], readModelTensor(t, filepath.Join(ckpt, "model"), sp.Name, sp.Size()))
	}
	out["params"] = p
	f, err := safetensors.Open(filepath.Join(ckpt, "optimizer.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, ti := range f.Tensors() {
		out[ti.Name] = readTensor(t, filepath.Join(ckpt, "optimizer.safetensors"), ti.Name)
	}
	return out
}
