package train_test

import (
	"context"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/internal/testmodel"
	"hone/train"
)

// The mixtures of experts train end to end like Llama: chat data, the loss
// falling, evaluation, prompt outputs through the decoder, checkpoints, and
// a final model that loads (DBRX's saved in its own config layout).
func TestRunMixtureOfExperts(t *testing.T) {
	for _, tc := range []struct{ name, config string }{
		{"mixtral", `{"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 128256, "hidden_size": 32,
			"intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
			"num_local_experts": 4, "num_experts_per_tok": 2, "output_router_logits": true, "router_aux_loss_coef": 0.02,
			"max_position_embeddings": 2048, "tie_word_embeddings": true, "bos_token_id": 128000, "eos_token_id": [128001, 128009]}`},
		{"dbrx", `{"architectures": ["DbrxForCausalLM"], "model_type": "dbrx", "d_model": 32, "n_heads": 4, "n_layers": 2,
			"max_seq_len": 2048, "vocab_size": 128256, "tie_word_embeddings": true, "output_router_logits": true,
			"attn_config": {"clip_qkv": 8, "kv_n_heads": 2}, "ffn_config": {"ffn_hidden_size": 48, "moe_num_experts": 4, "moe_top_k": 2}}`},
	} {
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
