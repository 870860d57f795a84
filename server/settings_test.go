package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"hone/client"
	"hone/internal/testmodel"
	"hone/settings"
	"hone/store/storetest"
)

// TestRunSettings drives run settings through the HTTP API with the real
// trainer: refusals name the setting, and the zeros users choose (no weight
// decay, no clipping, no warmup) reach the optimizer as zeros, as the
// trainer's own log of its optimizer shows.
func TestRunSettings(t *testing.T) {
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

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			mod  func(*client.CreateRunRequest)
			want string
		}{
			{func(r *client.CreateRunRequest) { r.Optimizer = &client.Optimizer{Decay: "step"} }, "optimizer.decay"},
			{func(r *client.CreateRunRequest) { r.Optimizer = &client.Optimizer{WeightDecay: client.Float(-0.1)} }, "optimizer.weight_decay"},
			{func(r *client.CreateRunRequest) { r.Optimizer = &client.Optimizer{MaxGradNorm: client.Float(-1)} }, "optimizer.max_grad_norm"},
			{func(r *client.CreateRunRequest) { r.Optimizer = &client.Optimizer{WarmupFrac: client.Float(1)} }, "optimizer.warmup_frac"},
			{func(r *client.CreateRunRequest) { r.Optimizer = &client.Optimizer{Beta2: client.Float(1)} }, "optimizer.beta2"},
			{func(r *client.CreateRunRequest) {
				r.Optimizer = &client.Optimizer{Decay: "constant", FinalLRMult: 0.1}
			}, "optimizer.final_lr_mult: 0.1 has no effect with constant decay"},
			{func(r *client.CreateRunRequest) { r.BatchRows = -1 }, "batch_rows: -1 is less than 1"},
			{func(r *client.CreateRunRequest) { r.Nodes = -1 }, "nodes: -1 is less than 1"},
			{func(r *client.CreateRunRequest) { r.Nodes = 2 }, "nodes: 2 workers are needed (one rank each) but only"},
			{func(r *client.CreateRunRequest) { r.Sharding = "parameters" }, `sharding: "parameters" splits the state across ranks, and the run has one node; set nodes to 2 or more`},
			{func(r *client.CreateRunRequest) { r.Sharding, r.Nodes = "zero3", 2 }, `sharding: "zero3" is not a known value; use one of none, optimizer, parameters`},
			// LionW full fine-tuning shards (ZeRO-1 and ZeRO-3): refused
			// only for the workers this server lacks.
			{func(r *client.CreateRunRequest) {
				r.Sharding, r.Nodes, r.Optimizer = "optimizer", 2, &client.Optimizer{Name: "lionw"}
			}, "nodes: 2 workers are needed (one rank each) but only"},
			{func(r *client.CreateRunRequest) {
				r.Sharding, r.Nodes, r.Optimizer = "parameters", 2, &client.Optimizer{Name: "lionw"}
			}, "nodes: 2 workers are needed (one rank each) but only"},
			// QLoRA shards its NF4 base layer by layer: likewise.
			{func(r *client.CreateRunRequest) {
				r.Sharding, r.Nodes, r.Method, r.LoRA = "parameters", 2, "lora", &client.LoRA{QuantizeBase: "nf4"}
			}, "nodes: 2 workers are needed (one rank each) but only"},
			{func(r *client.CreateRunRequest) { r.KeepCheckpoints = -3 }, "keep_checkpoints"},
			{func(r *client.CreateRunRequest) { r.Precision = "fp16" }, "precision"},
			{func(r *client.CreateRunRequest) { r.LearningRate = 2 }, "learning_rate: 2 is outside (0, 1]"},
			{func(r *client.CreateRunRequest) { r.Method = "qlora" }, `method: "qlora" is not a known value`},
			{func(r *client.CreateRunRequest) { r.LoRA = &client.LoRA{Rank: 8} }, "lora: it applies only to method lora"},
			{func(r *client.CreateRunRequest) { r.RegisterAdapter = true }, "register_adapter: it applies only to method lora"},
			{func(r *client.CreateRunRequest) { r.Method, r.LoRA = "lora", &client.LoRA{Rank: 4096} }, "lora.rank: 4096 is outside [1, 1024]"},
			{func(r *client.CreateRunRequest) { r.Method, r.LoRA = "lora", &client.LoRA{Alpha: -1} }, "lora.alpha"},
			{func(r *client.CreateRunRequest) { r.Method, r.LoRA = "lora", &client.LoRA{Dropout: client.Float(1)} }, "lora.dropout: 1 is outside [0, 1)"},
			{func(r *client.CreateRunRequest) {
				r.Method, r.LoRA = "lora", &client.LoRA{TargetModules: []string{"q_proj", "lm_head"}}
			}, `lora.target_modules: "lm_head" is not a projection hone adapts`},
			{func(r *client.CreateRunRequest) { r.Method, r.AdapterPath = "lora", "/etc" }, "adapter_path"},
			{func(r *client.CreateRunRequest) { r.Method, r.AdapterPath = "lora", model }, "adapter_path: "},
			{func(r *client.CreateRunRequest) { r.User = "ann/../bob" }, "user"},
			{func(r *client.CreateRunRequest) { r.User = "ann\x00" }, "user"},
			{func(r *client.CreateRunRequest) { r.ExperimentPath = "Users/ann" }, "experiment_path"},
			{func(r *client.CreateRunRequest) { r.ExperimentPath = "/Users/ann/../bob" }, "experiment_path"},
			{func(r *client.CreateRunRequest) { r.ExperimentPath = "/Users//ann" }, "experiment_path"},
			{func(r *client.CreateRunRequest) { r.ExperimentPath = "/Users/ann/" }, "experiment_path"},
			{func(r *client.CreateRunRequest) { r.ExperimentPath = "/Users/ann\x00x" }, "experiment_path"},
			{func(r *client.CreateRunRequest) { r.ExperimentPath = "/Users/ann\nx" }, "experiment_path"},
		} {
			r := req(nil)
			tc.mod(&r)
			_, err := h.c.CreateRun(ctx, r)
			if client.StatusOf(err) != 400 || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CreateRun(user %q, experiment_path %q, optimizer %s, ...) = %v, want 400 containing %q",
					r.User, r.ExperimentPath, optimizerJSON(r.Optimizer), err, tc.want)
			}
		}
		if l, _ := h.c.ListRuns(ctx, client.ListRunsOptions{}); len(l.Runs) != 0 {
			t.Fatalf("refused creates left runs: %+v", l.Runs)
		}
	})

	t.Run("reach-optimizer", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			opt  *client.Optimizer
			want []string
		}{
			{"zeros", &client.Optimizer{WeightDecay: client.Float(0), MaxGradNorm: client.Float(0), WarmupFrac: client.Float(0)},
				[]string{"weight_decay 0 (no decay), no clipping", "warmup 0 of 2 steps"}},
			{"defaults", nil, []string{"weight_decay 0.01 (matrices only), max_grad_norm 1;", "warmup 1 of 2 steps, linear decay"}},
			{"constant", &client.Optimizer{Decay: "constant", Beta1: client.Float(0)},
				[]string{"AdamW beta1 0, beta2 0.999", "warmup 1 of 2 steps, then constant"}},
		} {
			r := req(tc.opt)
			r.ValidateInputs = new(bool) // the data is known good; the tokenizer loads once, not twice
			run, err := h.c.CreateRun(ctx, r)
			if err != nil {
				t.Fatalf("CreateRun(%s): %v", tc.name, err)
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
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("%s: the trainer logged %q, want it to contain %q", tc.name, line, w)
				}
			}
		}
	})
}

// The API document states package settings' defaults and accepted values.
func TestOpenAPISettingsDefaults(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	resp, err := http.Get(h.serverURL() + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	type prop struct {
		Default any   `json:"default"`
		Enum    []any `json:"enum"`
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]prop `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	req, opt := doc.Components.Schemas["CreateRunRequest"].Properties, doc.Components.Schemas["Optimizer"].Properties
	lora := doc.Components.Schemas["LoRA"].Properties
	for _, tc := range []struct {
		name string
		p    prop
		want any
	}{
		{"training_duration", req["training_duration"], settings.Duration},
		{"learning_rate", req["learning_rate"], settings.LearningRate},
		{"batch_rows", req["batch_rows"], float64(settings.BatchRows)},
		{"grad_accum", req["grad_accum"], float64(settings.GradAccum)},
		{"nodes", req["nodes"], float64(settings.Nodes)},
		{"sharding", req["sharding"], settings.Sharding},
		{"checkpoint_every", req["checkpoint_every"], float64(settings.CheckpointEvery)},
		{"keep_checkpoints", req["keep_checkpoints"], float64(settings.KeepCheckpoints)},
		{"precision", req["precision"], settings.Precision},
		{"optimizer.name", opt["name"], settings.Optimizer},
		{"optimizer.beta1", opt["beta1"], settings.Beta1},
		{"optimizer.beta2", opt["beta2"], settings.Beta2},
		{"optimizer.eps", opt["eps"], settings.Eps},
		{"optimizer.weight_decay", opt["weight_decay"], settings.WeightDecay},
		{"optimizer.max_grad_norm", opt["max_grad_norm"], settings.MaxGradNorm},
		{"optimizer.warmup_frac", opt["warmup_frac"], settings.WarmupFrac},
		{"optimizer.decay", opt["decay"], settings.Decay},
		{"optimizer.final_lr_mult", opt["final_lr_mult"], settings.FinalLRMult},
		{"method", req["method"], settings.Method},
		{"lora.rank", lora["rank"], float64(settings.LoRARank)},
		{"lora.alpha", lora["alpha"], settings.LoRAAlpha},
		{"lora.dropout", lora["dropout"], settings.LoRADropout},
	} {
		if tc.p.Default != tc.want {
			t.Errorf("openapi.json: %s default %v, want settings' %v", tc.name, tc.p.Default, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		got  []any
		want []string
	}{{"optimizer.decay", opt["decay"].Enum, settings.Decays()}, {"optimizer.name", opt["name"].Enum, settings.Optimizers()}, {"precision", req["precision"].Enum, settings.Precisions()},
		{"method", req["method"].Enum, settings.Methods()}, {"sharding", req["sharding"].Enum, settings.Shardings()}, {"lora.target_modules", lora["target_modules"].Default.([]any), settings.LoRATargets()}} {
		if fmt.Sprint(tc.got) != fmt.Sprint(tc.want) {
			t.Errorf("openapi.json: %s enum %v, want settings' %v", tc.name, tc.got, tc.want)
		}
	}
}

func optimizerJSON(o *client.Optimizer) string {
	b, _ := json.Marshal(o)
	return string(b)
}
