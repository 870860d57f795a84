package engine_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
	"hone/safetensors"
)

const mixtralBase = `"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 32,
	"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1`

// Keys a Mixtral config.json leaves out take HF MixtralConfig's defaults;
// expert keys that hone cannot honour are refused by name.
func TestMixtralConfig(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{` + mixtralBase + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NumLocalExperts != 8 || c.NumExpertsPerTok != 2 || c.RouterAuxLossCoef != 0.001 || c.OutputRouterLogits ||
		c.Window() != 0 || c.RMSNormEps != 1e-5 || c.RopeTheta != 1e6 || c.MaxPositionEmbeddings != 131072 {
		t.Errorf("defaults: %+v", *c)
	}
	c, err = engine.ParseConfig([]byte(`{` + mixtralBase + `, "num_local_experts": 4, "num_experts_per_tok": 1, "sliding_window": 9}`))
	if err != nil || c.NumLocalExperts != 4 || c.NumExpertsPerTok != 1 || c.Window() != 9 {
		t.Errorf("ParseConfig with explicit keys = %+v, %v", c, err)
	}
	for _, tc := range []struct{ json, want string }{
		{`{` + mixtralBase + `, "num_local_experts": 2, "num_experts_per_tok": 3}`, `"num_experts_per_tok"`},
		{`{` + mixtralBase + `, "router_jitter_noise": 0.01}`, `"router_jitter_noise"`},
		{`{` + mixtralBase + `, "router_aux_loss_coef": -1}`, `"router_aux_loss_coef"`},
		{`{` + mixtralBase + `, "sliding_window": 0}`, `"sliding_window"`},
		{`{` + strings.Replace(mixtralBase, `"mixtral"`, `"llama"`, 1) + `, "num_local_experts": 8}`, `"architectures"`},
		{`{` + strings.Replace(strings.Replace(mixtralBase, `"mixtral"`, `"llama"`, 1), "Mixtral", "Llama", 1) + `, "num_local_experts": 8}`, `"num_local_experts"`},
	} {
		_, err := engine.ParseConfig([]byte(tc.json))
		if !errors.Is(err, engine.ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%s) = %v, want ErrUnsupported naming %s", tc.json, err, tc.want)
		}
	}
}

// A Mixtral model saves under HF's expert names and loads back the same.
func TestMixtralSaveLoad(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{` + mixtralBase + `, "num_local_experts": 3}`))
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(c, openCPU(t), engine.Options{})
	defer m.Close()
	m.InitRandom(7)
	out := filepath.Join(t.TempDir(), "model")
	if err := m.Save(out, engine.SaveOptions{DType: safetensors.F32}); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(filepath.Join(out, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, shape := range map[string][]int{
		"model.layers.0.block_sparse_moe.gate.weight":         {3, 16},
		"model.layers.0.block_sparse_moe.experts.2.w1.weight": {24, 16},
		"model.layers.0.block_sparse_moe.experts.2.w2.weight": {16, 24},
		"model.layers.0.block_sparse_moe.experts.2.w3.weight": {24, 16},
	} {
		info, ok := f.Info(name)
		if !ok || len(info.Shape) != 2 || info.Shape[0] != shape[0] || info.Shape[1] != shape[1] {
			t.Errorf("saved tensor %s: present %v, shape %v, want %v", name, ok, info.Shape, shape)
		}
	}
	back, err := engine.Load(out, openCPU(t), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	a, b := engine.HostView(m.Dev, m.Params.Arena), engine.HostView(back.Dev, back.Params.Arena)
	if back.Config.NumLocalExperts != 3 || relErr(b, a) != 0 {
		t.Errorf("reloaded model differs: experts %d, relative error %g", back.Config.NumLocalExperts, relErr(b, a))
	}
}

// The published configs parse, and their parameter counts are the
// published ones: Mixtral-8x7B 46,702,792,704 (12.9B active per token),
// DBRX 132B (36B active).
func TestPublishedMoEConfigs(t *testing.T) {
	for _, tc := range []struct {
		json               string
		total, active, tol float64
		window, experts, k int
		clip               float64
	}{
		{mixtral8x7b, 46702792704, 12.9e9, 0.05e9, 0, 8, 2, 0},
		{dbrxBase, 132e9, 36e9, 0.5e9, 0, 16, 4, 8},
	} {
		c, err := engine.ParseConfig([]byte(tc.json))
		if err != nil {
			t.Fatal(err)
		}
		total, active := float64(c.NumParams()), float64(c.ActiveParams())
		if d := total - tc.total; d > tc.tol || d < -tc.tol {
			t.Errorf("%s: %d parameters, published %g", c.ModelType, c.NumParams(), tc.total)
		}
		if d := active - tc.active; d > tc.tol || d < -tc.tol {
			t.Errorf("%s: %d active parameters, published %g", c.ModelType, c.ActiveParams(), tc.active)
		}
		if c.Window() != tc.window || c.NumLocalExperts != tc.experts || c.NumExpertsPerTok != tc.k ||
			(tc.clip > 0) != (c.ClipQKV != nil) {
			t.Errorf("%s: window %d, experts %d, per token %d, clip %v", c.ModelType, c.Window(), c.NumLocalExperts, c.NumExpertsPerTok, c.ClipQKV)
		}
	}
}
