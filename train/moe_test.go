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
	"hone/internal/testmodel"
	"hone/train"
)

var moeConfigs = []struct{ name, config string }{
	{"mixtral", `{"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 128256, "hidden_size": 32,
		"intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
		"num_local_experts": 4, "num_experts_per_tok": 2, "output_router_logits": true, "router_aux_loss_coef": 0.02,
		"max_position_embeddings": 2048, "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": [128001, 128009]}`},
	{"dbrx", `{"architectures": ["DbrxForCausalLM"], "model_type": "dbrx", "d_model": 32, "n_heads": 4, "n_layers": 2,
		"max_seq_len": 2048, "vocab_size": 128256, "tie_word_embeddings": true, "output_router_logits": true,
		"attn_config": {"clip_qkv": 8, "kv_n_heads": 2}, "ffn_config": {"ffn_hidden_size": 48, "moe_num_experts": 4, "moe_top_k": 2}}`},
}

// The mixtures of experts train end to end like Llama: chat data, the loss
// falling, evaluation, prompt outputs through the decoder, checkpoints, and
// a final model that loads (DBRX's saved in its own config layout).
func TestRunMixtureOfExperts(t *testing.T) {
	for _, tc := range moeConfigs {
		t.Run(tc.name, func(t *testing.T) {
			model := t.TempDir()
			testmodel.Write(t, model, tc.config, 1)
			s := spec(model, chatData(t))
			s.EvalPrompts = []string{"What is 12 + 30?"}
			rec := &recorder{}
			res, err := train.Run(context.Background(), s, t.TempDir(), rec)
			if err != nil {
				t.Fatal(err)
			}
			if first, last := rec.steps[0].Loss, rec.steps[len(rec.steps)-1].Loss; res.Steps != 8 || !(last < first) {
				t.Errorf("%d steps, loss %.4f -> %.4f; want 8 steps and a falling loss", res.Steps, first, last)
			}
			if len(rec.evals) == 0 || !(rec.evals[0].Perplexity > 1) || len(rec.prompts[8]) != 1 {
				t.Errorf("evals %+v, prompt outputs %+v", rec.evals, rec.prompts)
			}
			m, err := engine.Load(res.ModelDir, cpu.New(0), engine.Options{})
			if err != nil {
				t.Fatalf("final model does not load: %v", err)
			}
			defer m.Close()
			if m.Config.ModelType != tc.name || !m.Config.MoE() {
				t.Errorf("final model: model_type %q, experts %v", m.Config.ModelType, m.Config.MoE())
			}
		})
	}
}

// LoRA runs on the mixtures of experts with the default targets: Mixtral's
// attention projections and every expert's w1, w2, w3 (PEFT names), DBRX's
// Wqkv and out_proj. The loss falls, the adapter is saved in PEFT layout,
// and the final model, after eval prompts merged the adapter and restored
// the base, is MergeDirs of base and adapter and changes exactly the
// adapted weights. A target the
// architecture lacks is refused, naming the valid ones.
func TestRunMixtureOfExpertsLoRA(t *testing.T) {
	for _, tc := range []struct {
		moe             int // index into moeConfigs
		targets, tensor string
		changed         map[string]bool
	}{
		{0, "q_proj,k_proj,v_proj,o_proj,w1,w2,w3", "base_model.model.model.layers.1.block_sparse_moe.experts.3.w2.lora_A.weight",
			map[string]bool{"model.layers.0.block_sparse_moe.experts.2.w1.weight": true, "model.layers.1.self_attn.o_proj.weight": true,
				"model.layers.0.block_sparse_moe.gate.weight": false, "model.embed_tokens.weight": false}},
		{1, "Wqkv,out_proj", "base_model.model.transformer.blocks.0.norm_attn_norm.attn.Wqkv.lora_B.weight",
			map[string]bool{"transformer.blocks.0.norm_attn_norm.attn.Wqkv.weight": true, "transformer.blocks.1.norm_attn_norm.attn.out_proj.weight": true,
				"transformer.blocks.0.ffn.experts.mlp.w1": false, "transformer.blocks.0.ffn.router.layer.weight": false}},
	} {
		mc := moeConfigs[tc.moe]
		t.Run(mc.name, func(t *testing.T) {
			model := t.TempDir()
			testmodel.Write(t, model, mc.config, 1)
			s := spec(model, chatData(t))
			s.Method, s.LoRA, s.LearningRate = "lora", &train.LoRASpec{Rank: 4}, 1e-2
			s.EvalPrompts = []string{"What is 12 + 30?"} // merged for the decoder, then the base restored
			rec := &recorder{}
			res, err := train.Run(context.Background(), s, t.TempDir(), rec)
			if err != nil {
				t.Fatal(err)
			}
			if first, last := rec.steps[0].Loss, rec.steps[len(rec.steps)-1].Loss; res.Steps != 8 || !(last < first) {
				t.Errorf("%d steps, loss %.4f -> %.4f; want 8 steps and a falling loss", res.Steps, first, last)
			}
			raw, err := os.ReadFile(filepath.Join(res.AdapterDir, engine.AdapterConfigFile))
			if err != nil {
				t.Fatal(err)
			}
			lc, err := engine.ParseAdapterConfig(raw)
			if err != nil || strings.Join(lc.Targets, ",") != tc.targets {
				t.Errorf("adapter targets %v (%v), want %s", lc.Targets, err, tc.targets)
			}
			if _, ok := openAdapter(t, res.AdapterDir).Info(tc.tensor); !ok {
				t.Errorf("the adapter has no tensor %s", tc.tensor)
			}
			merged := filepath.Join(t.TempDir(), "merged")
			if err := engine.MergeDirs(model, res.AdapterDir, merged, cpu.New(0)); err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(filepath.Join(merged, "model.safetensors"))
			got, _ := os.ReadFile(filepath.Join(res.ModelDir, "model.safetensors"))
			if len(want) == 0 || !bytes.Equal(got, want) {
				t.Error("the run's merged model is not the merge of its base and its adapter")
			}
			base, fin := openModel(t, model), openModel(t, res.ModelDir)
			for name, changed := range tc.changed {
				if diff := !equalTensor(t, base, fin, name); diff != changed {
					t.Errorf("%s changed %v, want %v", name, diff, changed)
				}
			}
		})
	}
	model := t.TempDir()
	testmodel.Write(t, model, moeConfigs[0].config, 1)
	s := spec(model, chatData(t))
	s.Method, s.LoRA = "lora", &train.LoRASpec{Rank: 4, Targets: []string{"q_proj", "gate_proj"}}
	if _, err := train.Run(context.Background(), s, t.TempDir(), nil); err == nil ||
		!strings.Contains(err.Error(), `"gate_proj"`) || !strings.Contains(err.Error(), "w1") {
		t.Errorf("gate_proj on Mixtral: %v, want an error naming it and the valid targets", err)
	}
}

// The run service resolves a spec before it knows the model, then calls
// WithModelLoRATargets: default targets become the architecture's, given
// ones stay.
func TestWithModelLoRATargets(t *testing.T) {
	model := t.TempDir()
	testmodel.Write(t, model, moeConfigs[1].config, 1)
	s := spec("", chatData(t))
	s.Method = "lora"
	s, err := s.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.LoRA.Targets, ",") != strings.Join(engine.LoRATargets, ",") || !s.LoRA.DefaultTargets {
		t.Fatalf("resolved without a model: %+v", s.LoRA)
	}
	s.ModelDir = model
	if got := s.WithModelLoRATargets(); strings.Join(got.LoRA.Targets, ",") != "Wqkv,out_proj" {
		t.Errorf("DBRX defaults: %v", got.LoRA.Targets)
	}
	s.LoRA.Targets, s.LoRA.DefaultTargets = []string{"out_proj"}, false
	if got := s.WithModelLoRATargets(); strings.Join(got.LoRA.Targets, ",") != "out_proj" {
		t.Errorf("given targets changed to %v", got.LoRA.Targets)
	}
}

// An adapter whose target_modules is "all-linear" (each architecture's own
// modules) resolves, and resolves again as Run does, without its targets
// being checked against a fixed list.
func TestResolveAllLinearAdapter(t *testing.T) {
	dir := t.TempDir()
	cfg := `{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "target_modules": "all-linear"}`
	if err := os.WriteFile(filepath.Join(dir, engine.AdapterConfigFile), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s := spec("", chatData(t))
	s.Method, s.Adapter, s.LoRA = "lora", dir, &train.LoRASpec{}
	s, err := s.Resolve()
	if err == nil {
		s, err = train.ResolveAdapter(s)
	}
	if err == nil {
		_, err = s.Resolve()
	}
	if err != nil || s.LoRA.Rank != 4 {
		t.Errorf("all-linear adapter: %v (%+v)", err, s.LoRA)
	}
}
