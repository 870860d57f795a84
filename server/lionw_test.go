package server_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"hone/client"
	"hone/internal/testmodel"
	"hone/store/storetest"
)

// optimizer {"name": "lionw"} through the HTTP API reaches the trainer
// (its log names LionW with the product's defaults), a validation shows
// the learning rate the run would use (5e-7, the product's), and settings
// LionW cannot use are refused naming the field.
func TestLionWThroughAPI(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{realTrainer: true})
	model := filepath.Join(h.data, "llama3-tiny")
	testmodel.Write(t, model, `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
		"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
		"rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embeddings": 2048, "tie_word_embeddings": true,
		"bos_token_id": 128000, "eos_token_id": [128001, 128009]}`, 1)
	data := h.writeData(t, "chat.jsonl")
	req := func(o *client.Optimizer) client.CreateRunRequest {
		return client.CreateRunRequest{Model: model, TrainDataPath: data, RegisterTo: "main.demo.bot",
			TrainingDuration: "2ba", ContextLength: 64, User: "ann", Optimizer: o}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		opt  *client.Optimizer
		want string
	}{
		{&client.Optimizer{Name: "lion"}, `optimizer.name: "lion" is not a known value`},
		{&client.Optimizer{Name: "lionw", Eps: 1e-6}, "optimizer.eps: it applies only to AdamW"},
		{&client.Optimizer{Name: "lionw", WeightDecay: client.Float(1)}, "optimizer.weight_decay: 1 is outside [0, 1) for lionw"},
		{&client.Optimizer{Name: "lionw", Beta2: client.Float(1)}, "optimizer.beta2"},
	} {
		if _, err := h.c.CreateRun(ctx, req(tc.opt)); client.StatusOf(err) != 400 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateRun(optimizer %s) = %v, want 400 containing %q", optimizerJSON(tc.opt), err, tc.want)
		}
	}

	v, err := h.c.ValidateRun(ctx, req(&client.Optimizer{Name: "lionw"}))
	if err != nil || !v.OK {
		t.Fatalf("ValidateRun(lionw) = %+v, %v", v, err)
	}
	if o := v.Request.Optimizer; v.Request.LearningRate != 5e-7 || o == nil || o.Name != "lionw" || *o.Beta2 != 0.99 || *o.WeightDecay != 0 {
		t.Fatalf("ValidateRun(lionw) shows learning rate %g, optimizer %s; want 5e-7 and LionW's defaults", v.Request.LearningRate, optimizerJSON(o))
	}

	r := req(&client.Optimizer{Name: "lionw", WeightDecay: client.Float(1e-4)})
	r.LearningRate = 1e-3
	r.ValidateInputs = new(bool)
	run, err := h.c.CreateRun(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	done := h.wait(t, run.Name, client.StatusCompleted, client.StatusFailed)
	if done.Status != client.StatusCompleted {
		t.Fatalf("run %s: %s; events %+v", done.Status, done.Error, done.Events)
	}
	line := ""
	for _, e := range done.Events {
		if strings.HasPrefix(e.Message, "optimizer: ") {
			line = e.Message
		}
	}
	if want := "optimizer: LionW beta1 0.9, beta2 0.99, weight_decay 0.0001 (matrices only), max_grad_norm 1;"; !strings.Contains(line, want) {
		t.Errorf("the trainer logged %q, want it to contain %q", line, want)
	}
}
