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

const mistralBase = `"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32,
	"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1`

// sliding_window follows HF's MistralConfig: absent means the 4096 default,
// null means full attention, a number is the window; Llama ignores the key.
func TestMistralWindowConfig(t *testing.T) {
	for _, tc := range []struct {
		json string
		want int
	}{
		{`{` + mistralBase + `}`, 4096},
		{`{` + mistralBase + `, "sliding_window": null}`, 0},
		{`{` + mistralBase + `, "sliding_window": 7}`, 7},
		{`{"model_type": "llama", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
			"num_attention_heads": 2, "sliding_window": 7}`, 0},
	} {
		c, err := engine.ParseConfig([]byte(tc.json))
		if err != nil {
			t.Fatalf("ParseConfig(%s): %v", tc.json, err)
		}
		if got := c.Window(); got != tc.want {
			t.Errorf("ParseConfig(%s).Window() = %d, want %d", tc.json, got, tc.want)
		}
	}
	for _, tc := range []struct{ json, want string }{
		{`{` + mistralBase + `, "sliding_window": 0}`, `"sliding_window"`},
		{`{` + strings.Replace(mistralBase, "MistralForCausalLM", "LlamaForCausalLM", 1) + `}`, `"architectures"`},
		{`{"model_type": "qwen2_moe"}`, `"qwen2_moe" is not supported`},
	} {
		_, err := engine.ParseConfig([]byte(tc.json))
		if !errors.Is(err, engine.ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%s) = %v, want ErrUnsupported naming %s", tc.json, err, tc.want)
		}
	}
}

// A Mistral model saved without a source config keeps an explicit null
// window (absent would turn HF's 4096 default on) and HF's tensor names.
func TestMistralSaveKeepsNullWindow(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{` + mistralBase + `, "sliding_window": null}`))
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(c, openCPU(t), engine.Options{})
	defer m.Close()
	m.InitRandom(1)
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
	if v, ok := raw["sliding_window"]; !ok || v != nil {
		t.Errorf("saved config.json sliding_window = %v (present %v), want null", v, ok)
	}
	back, err := engine.Load(out, openCPU(t), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if back.Config.Window() != 0 || back.Config.ModelType != "mistral" {
		t.Errorf("reloaded config: model_type %q window %d, want mistral and 0", back.Config.ModelType, back.Config.Window())
	}
	f, err := safetensors.Open(filepath.Join(out, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, ok := f.Info("model.layers.0.self_attn.q_proj.weight"); !ok {
		t.Error("saved weights lack HF's name model.layers.0.self_attn.q_proj.weight")
	}
}
