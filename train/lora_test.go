package train_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/safetensors"
	"hone/train"
)

func loraSpec(model, data string) train.Spec {
	s := spec(model, data)
	s.Method = "lora"
	s.LoRA = &train.LoRASpec{Rank: 4, Targets: []string{"q_proj", "v_proj", "down_proj"}}
	s.LearningRate = 1e-2
	return s
}

// A LoRA run cancelled twice and resumed ends with the adapter and merged
// model byte-equal to an uninterrupted run's, dropout (default 0.05) and
// eval prompts (decoded with the adapter attached) included, in fp32 and in
// bf16 precision (a frozen bf16 base, which checkpoints do not hold). Its
// checkpoints hold the adapter in PEFT layout, its merged model is
// engine.MergeDirs of the base and its adapter, and the base weights stay
// as they were: projections the adapter does not target come out unchanged.
func TestLoRAResumeIsExact(t *testing.T) {
	for _, precision := range []string{"fp32", "bf16"} {
		t.Run(precision, func(t *testing.T) { checkLoRAResumeIsExact(t, precision) })
	}
}

func checkLoRAResumeIsExact(t *testing.T, precision string) {
	model, data := tinyModel(t), chatData(t)
	s := loraSpec(model, data)
	s.Precision = precision
	s.EvalPrompts = []string{"What is 12 + 30?"}
	full, resumed := checkResumeIsExact(t, s)

	a, _ := os.ReadFile(filepath.Join(full.AdapterDir, engine.AdapterWeightsFile))
	b, _ := os.ReadFile(filepath.Join(resumed.AdapterDir, engine.AdapterWeightsFile))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatal("resumed run's final adapter differs from the uninterrupted run's")
	}
	cfg, err := os.ReadFile(filepath.Join(full.AdapterDir, engine.AdapterConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	lc, err := engine.ParseAdapterConfig(cfg)
	if err != nil || lc.Rank != 4 || lc.Alpha != 32 || lc.Dropout != 0.05 || strings.Join(lc.Targets, ",") != "q_proj,v_proj,down_proj" {
		t.Fatalf("adapter config %+v (%v), want r 4, alpha 32, dropout 0.05, targets q_proj,v_proj,down_proj", lc, err)
	}

	merged := filepath.Join(t.TempDir(), "merged")
	if err := engine.MergeDirs(model, full.AdapterDir, merged, cpu.New(0)); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(merged, "model.safetensors"))
	got, _ := os.ReadFile(filepath.Join(full.ModelDir, "model.safetensors"))
	if len(want) == 0 || !bytes.Equal(got, want) {
		t.Error("the run's merged model is not the merge of its base and its adapter")
	}

	base, fin := openModel(t, model), openModel(t, full.ModelDir)
	for name, changed := range map[string]bool{
		"model.layers.0.self_attn.q_proj.weight": true, "model.layers.1.mlp.down_proj.weight": true,
		"model.layers.0.self_attn.k_proj.weight": false, "model.layers.1.mlp.up_proj.weight": false,
		"model.embed_tokens.weight": false, "model.norm.weight": false,
	} {
		if diff := !equalTensor(t, base, fin, name); diff != changed {
			t.Errorf("%s changed %v, want %v", name, diff, changed)
		}
	}
	ckpts, _ := filepath.Glob(filepath.Join(filepath.Dir(full.ModelDir), "checkpoints", "step-*", "adapter", engine.AdapterConfigFile))
	if len(ckpts) == 0 {
		t.Error("no checkpoint holds a PEFT adapter directory")
	}
	if models, _ := filepath.Glob(filepath.Join(filepath.Dir(full.ModelDir), "checkpoints", "step-*", "model")); len(models) != 0 {
		t.Errorf("LoRA checkpoints hold the base model: %v", models)
	}
}

func openModel(t *testing.T, dir string) *safetensors.Model {
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func equalTensor(t *testing.T, a, b *safetensors.Model, name string) bool {
	ia, _ := a.Info(name)
	x, y := make([]float32, numel(ia.Shape)), make([]float32, numel(ia.Shape))
	if err := a.Float32(name, x); err != nil {
		t.Fatal(err)
	}
	if err := b.Float32(name, y); err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// A run given adapter_path trains that adapter on: with a learning rate
// too small to move it, its final adapter is the one it started from (a
// fresh adapter would have lora_B zero), and the adapter's config sets the
// rank, refusing a request that names another.
func TestLoRAContinueAdapter(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	s := loraSpec(model, data)
	s.Duration, s.AdapterOnly = train.Duration{Batches: 3}, true
	work := t.TempDir()
	first, err := train.Run(context.Background(), s, work, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(work, "final")); first.ModelDir != "" || !os.IsNotExist(err) {
		t.Errorf("adapter only: the run wrote a merged model (%q, %v)", first.ModelDir, err)
	}
	cont := loraSpec(model, data)
	cont.LoRA = &train.LoRASpec{}
	cont.Adapter, cont.Duration, cont.LearningRate = first.AdapterDir, train.Duration{Batches: 1}, 1e-12
	rec := &recorder{}
	res, err := train.Run(context.Background(), cont, t.TempDir(), rec)
	if err != nil {
		t.Fatal(err)
	}
	start, end := openAdapter(t, first.AdapterDir), openAdapter(t, res.AdapterDir)
	for _, info := range start.Tensors() {
		x, y := make([]float32, numel(info.Shape)), make([]float32, numel(info.Shape))
		start.Float32(info.Name, x)
		end.Float32(info.Name, y)
		for i := range x {
			if d := x[i] - y[i]; d > 1e-6 || d < -1e-6 {
				t.Fatalf("%s[%d]: continued run ended at %g, started from %g", info.Name, i, y[i], x[i])
			}
		}
	}
	fresh := &recorder{}
	s.Duration = train.Duration{Batches: 1}
	if _, err := train.Run(context.Background(), s, t.TempDir(), fresh); err != nil {
		t.Fatal(err)
	}
	if !(rec.steps[0].Loss < fresh.steps[0].Loss) {
		t.Errorf("first loss continuing the adapter %.4f, from a fresh adapter %.4f: the adapter was not loaded", rec.steps[0].Loss, fresh.steps[0].Loss)
	}

	cont.LoRA = &train.LoRASpec{Rank: 8}
	if _, err := train.Run(context.Background(), cont, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "lora.rank: 8 conflicts with 4") {
		t.Errorf("rank conflicting with the adapter's: got %v, want an error naming lora.rank", err)
	}
}

func openAdapter(t *testing.T, dir string) *safetensors.File {
	f, err := safetensors.Open(filepath.Join(dir, engine.AdapterWeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// The fingerprint covers the method and the LoRA settings: a work dir of a
// LoRA run does not resume under another rank or dropout, nor as a full run.
func TestLoRAFingerprint(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	s := loraSpec(model, data)
	s.Duration, s.EvalData = train.Duration{Batches: 1}, ""
	work := t.TempDir()
	if _, err := train.Run(context.Background(), s, work, nil); err != nil {
		t.Fatal(err)
	}
	other := 0.1
	for name, mod := range map[string]func(*train.Spec){
		"rank":    func(s *train.Spec) { s.LoRA.Rank = 8 },
		"dropout": func(s *train.Spec) { s.LoRA.Dropout = &other },
		"targets": func(s *train.Spec) { s.LoRA.Targets = []string{"q_proj"} },
		"full":    func(s *train.Spec) { s.Method, s.LoRA = "full", nil },
	} {
		s2 := s
		lo := *s.LoRA
		s2.LoRA = &lo
		mod(&s2)
		if _, err := train.Run(context.Background(), s2, work, nil); err == nil || !strings.Contains(err.Error(), "other data or settings") {
			t.Errorf("%s changed: resuming gave %v, want a refusal naming other settings", name, err)
		}
	}
}
