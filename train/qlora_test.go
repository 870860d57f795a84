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
	"hone/train"
)

type logRecorder struct {
	recorder
	logs []string
}

func (r *logRecorder) OnLog(s string) { r.logs = append(r.logs, s) }

func (r *logRecorder) logged(part string) bool {
	for _, l := range r.logs {
		if strings.Contains(l, part) {
			return true
		}
	}
	return false
}

// A QLoRA run (lora.quantize_base nf4, bf16) trains its adapter on the NF4
// base, completes its eval prompts there with the adapter attached, and
// registers the merge of its adapter into the unquantized base, saying so.
func TestQLoRARunMergesIntoUnquantizedBase(t *testing.T) {
	for _, emb := range []bool{false, true} {
		t.Run(map[bool]string{false: "layers", true: "embeddings"}[emb], func(t *testing.T) { testQLoRARun(t, emb) })
	}
}

// testQLoRARun is the test above; emb quantizes the embeddings and head
// too (lora.quantize_embeddings), which the log says.
func testQLoRARun(t *testing.T, emb bool) {
	model, data := tinyModel(t), chatData(t)
	s := loraSpec(model, data)
	s.Precision = "bf16"
	s.LoRA.QuantizeBase = "nf4"
	s.LoRA.QuantizeEmbeddings = emb
	s.EvalPrompts = []string{"What is 12 + 30?"}
	rec := &logRecorder{}
	res, err := train.Run(context.Background(), s, t.TempDir(), rec)
	if err != nil {
		t.Fatal(err)
	}
	if first, last := rec.steps[0].Loss, rec.steps[len(rec.steps)-1].Loss; !(last < first) {
		t.Errorf("loss did not fall: %.4f -> %.4f", first, last)
	}
	if len(rec.prompts) == 0 || rec.logged("eval prompts skipped") {
		t.Errorf("no eval prompt outputs (%+v); logs: %q", rec.prompts, rec.logs)
	}
	for step, outs := range rec.prompts {
		if len(outs) != 1 || outs[0].Prompt != s.EvalPrompts[0] {
			t.Errorf("prompt outputs at step %d: %+v", step, outs)
		}
	}
	wants := []string{"base quantized to nf4", "merging the adapter into the unquantized base"}
	if emb {
		wants = append(wants, "base quantized to nf4 with its embeddings and head")
	}
	for _, want := range wants {
		if !rec.logged(want) {
			t.Errorf("no log line says %q; logs: %q", want, rec.logs)
		}
	}
	merged := filepath.Join(t.TempDir(), "merged")
	if err := engine.MergeDirs(model, res.AdapterDir, merged, cpu.New(0)); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(merged, "model.safetensors"))
	got, _ := os.ReadFile(filepath.Join(res.ModelDir, "model.safetensors"))
	if len(want) == 0 || !bytes.Equal(got, want) {
		t.Error("the run's model is not the merge of its adapter into the unquantized base")
	}
	base, fin := openModel(t, model), openModel(t, res.ModelDir)
	if !equalTensor(t, base, fin, "model.layers.0.self_attn.k_proj.weight") {
		t.Error("an untargeted projection differs from the unquantized base's: the merge went into a dequantized base")
	}

}

// A quantize_base other than nf4 is refused naming the setting.
func TestQLoRASpecRefusesUnknownQuantization(t *testing.T) {
	s := loraSpec("model", "data")
	s.LoRA.QuantizeBase = "int4"
	if _, err := s.Resolve(); err == nil || !strings.Contains(err.Error(), "lora.quantize_base") {
		t.Errorf("Resolve with quantize_base int4: %v, want an error naming lora.quantize_base", err)
	}
}

// quantize_embeddings without quantize_base is refused naming the setting.
func TestQLoRASpecRefusesEmbeddingsWithoutBase(t *testing.T) {
	s := loraSpec("model", "data")
	s.LoRA.QuantizeEmbeddings = true
	if _, err := s.Resolve(); err == nil || !strings.Contains(err.Error(), "lora.quantize_embeddings") {
		t.Errorf("Resolve with quantize_embeddings and no quantize_base: %v, want an error naming lora.quantize_embeddings", err)
	}
}
