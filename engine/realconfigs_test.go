package engine_test

// The config.json files of mistralai/Mixtral-8x7B-v0.1 and
// databricks/dbrx-base as published.
const (
	mixtral8x7b = `{"architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
	"hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
	"max_position_embeddings": 32768, "model_type": "mixtral", "num_attention_heads": 32, "num_experts_per_tok": 2,
	"num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": false,
	"rms_norm_eps": 1e-05, "rope_theta": 1e6, "router_aux_loss_coef": 0.02, "sliding_window": null,
	"tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0", "use_cache": true,
	"vocab_size": 32000}`
	dbrxBase = `{"architectures": ["DbrxForCausalLM"], "attn_config": {"clip_qkv": 8, "kv_n_heads": 8, "model_type": "",
	"rope_theta": 500000}, "d_model": 6144, "emb_pdrop": 0.0, "ffn_config": {"ffn_hidden_size": 10752, "model_type": "",
	"moe_jitter_eps": 0, "moe_loss_weight": 0.05, "moe_num_experts": 16, "moe_top_k": 4}, "initializer_range": 0.02,
	"max_seq_len": 32768, "model_type": "dbrx", "n_heads": 48, "n_layers": 40, "output_router_logits": false,
	"resid_pdrop": 0.0, "router_aux_loss_coef": 0.05, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
	"transformers_version": "4.38.2", "use_cache": true, "vocab_size": 100352}`
)
