package engine_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
	"hone/safetensors"
)

const dbrxSmall = `{"architectures": ["DbrxForCausalLM"], "model_type": "dbrx", "d_model": 32, "n_heads": 4, "n_layers": 1,
	"max_seq_len": 64, "vocab_size": 48, "attn_config": {"clip_qkv": 8, "kv_n_heads": 2, "rope_theta": 500000},
	"ffn_config": {"ffn_hidden_size": 40, "moe_num_experts": 4, "moe_top_k": 2, "moe_jitter_eps": 0.01, "moe_loss_weight": 0.05}}`

// DBRX's config layout maps onto the engine's fields with DbrxConfig's
// defaults for what it leaves out; what hone cannot honour is refused by
// name.
func TestDBRXConfig(t *testing.T) {
	c, err := engine.ParseConfig([]byte(dbrxSmall))
	if err != nil {
		t.Fatal(err)
	}
	if c.HiddenSize != 32 || c.HeadDim != 8 || c.NumKeyValueHeads != 2 || c.IntermediateSize != 40 || c.NumLocalExperts != 4 ||
		c.NumExpertsPerTok != 2 || c.RouterAuxLossCoef != 0.05 || c.RopeTheta != 500000 || c.MaxPositionEmbeddings != 64 ||
		c.ClipQKV == nil || *c.ClipQKV != 8 || c.ExpertNormP == nil || *c.ExpertNormP != 1 || c.RMSNormEps != 1e-5 {
		t.Errorf("parsed %+v", *c)
	}
	c, err = engine.ParseConfig([]byte(`{"model_type": "dbrx"}`))
	if err != nil || c.HiddenSize != 2048 || c.NumAttentionHeads != 16 || c.NumKeyValueHeads != 1 || c.NumLocalExperts != 4 ||
		c.NumExpertsPerTok != 1 || c.ClipQKV != nil || c.IntermediateSize != 3584 {
		t.Errorf("defaults: %+v, %v", c, err)
	}
	for _, tc := range []struct{ edit, want string }{
		{`"clip_qkv": 8`, `"clip_qkv": -1`},
		{`"moe_top_k": 2`, `"moe_top_k": 5`},
		{`"n_layers": 1`, `"n_layers": 1, "resid_pdrop": 0.1`},
		{`"moe_loss_weight": 0.05`, `"moe_loss_weight": 0.05, "moe_normalize_expert_weights": 0`},
	} {
		js := strings.Replace(dbrxSmall, tc.edit, tc.want, 1)
		if _, err := engine.ParseConfig([]byte(js)); !errors.Is(err, engine.ErrUnsupported) {
			t.Errorf("ParseConfig with %s = %v, want ErrUnsupported", tc.want, err)
		}
	}
}

// A DBRX model saves under HF's names in DBRX's config layout and loads
// back the same.
func TestDBRXSaveLoad(t *testing.T) {
	c, err := engine.ParseConfig([]byte(dbrxSmall))
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(c, openCPU(t), engine.Options{})
	defer m.Close()
	m.InitRandom(3)
	out := filepath.Join(t.TempDir(), "model")
	if err := m.Save(out, engine.SaveOptions{DType: safetensors.F32}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["d_model"] != 32.0 || raw["hidden_size"] != nil || raw["ffn_config"] == nil {
		t.Errorf("saved config.json is not in DBRX's layout: %s", b)
	}
	f, err := safetensors.Open(filepath.Join(out, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, name := range []string{"transformer.wte.weight", "transformer.blocks.0.norm_attn_norm.attn.Wqkv.weight",
		"transformer.blocks.0.ffn.experts.mlp.w2", "transformer.norm_f.weight", "lm_head.weight"} {
		if _, ok := f.Info(name); !ok {
			t.Errorf("saved weights lack %s", name)
		}
	}
	norm := readTensor(t, f, "transformer.blocks.0.norm_attn_norm.norm_1.weight")
	if norm[0] != 1 {
		t.Errorf("initialised norm_1 weight %g, want 1", norm[0])
	}
	back, err := engine.Load(out, openCPU(t), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if e := relErr(engine.HostView(back.Dev, back.Params.Arena), engine.HostView(m.Dev, m.Params.Arena)); e != 0 || !back.Config.IsDBRX() {
		t.Errorf("reloaded: dbrx %v, relative error %g", back.Config.IsDBRX(), e)
	}
}
