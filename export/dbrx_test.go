package export_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/engine"
	"hone/export"
	"hone/generate"
	"hone/internal/testassets"
	"hone/tokenizer"
)

// dbrxTiny is DBRX-shaped (GQA, clip_qkv, top-2 of 4 experts over their
// sum) and small, with the constructed GPT-4-style tokenizer's vocabulary.
const dbrxTiny = `{"architectures": ["DbrxForCausalLM"], "model_type": "dbrx", "d_model": 32, "n_heads": 4, "n_layers": 2,
	"max_seq_len": 4096, "vocab_size": 660, "attn_config": {"clip_qkv": 1.5, "kv_n_heads": 2, "rope_theta": 500000},
	"ffn_config": {"ffn_hidden_size": 48, "moe_num_experts": 4, "moe_top_k": 2, "moe_loss_weight": 0.05}}`

// writeDBRXModel writes a random DBRX model with the GPT-4-style tokenizer
// of tokenizer/testdata/gpt4style.
func writeDBRXModel(t *testing.T, dir, config string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join("..", "tokenizer", "testdata", "gpt4style", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := engine.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(c, dev, engine.Options{})
	m.InitRandom(11)
	if err := m.Save(dir, engine.SaveOptions{SourceDir: dir}); err != nil {
		t.Fatal(err)
	}
	sharpenAttention(t, dir)
}

// llama.cpp loads the DBRX export (its dbrx architecture), tokenizes as
// hone does and continues prompts greedily with hone's tokens.
func TestLlamaCppLoadsDBRXExport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	writeDBRXModel(t, dir, dbrxTiny)
	out := filepath.Join(t.TempDir(), "dbrx.gguf")
	if err := export.GGUF(context.Background(), dir, out, export.GGUFOptions{DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	f, _ := readGGUF(t, out)
	for key, want := range map[string]any{"general.architecture": "dbrx", "dbrx.expert_count": uint32(4),
		"dbrx.expert_used_count": uint32(2), "dbrx.attention.clamp_kqv": float32(1.5)} {
		if got := kv(t, f, key).Value; got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"Hello, world! How are you today?", "the cat's 12345 words\n\nand  more", "<|im_start|>user\nhi<|im_end|>"}
	var prompts [][]int
	for _, s := range texts {
		prompts = append(prompts, tok.Encode(s, true))
	}
	res := testassets.LlamaCpp(t, testassets.LlamaCppRequest{Model: out, Texts: texts, Prompts: prompts, MaxTokens: 10})
	for i, s := range texts {
		if !slices.Equal(res.Tokens[i], prompts[i]) {
			t.Errorf("llama.cpp tokenizes %q as %v, hone as %v", s, res.Tokens[i], prompts[i])
		}
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(dir, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i, p := range prompts {
		want, err := generate.Complete(context.Background(), m, p, generate.Params{MaxNewTokens: 10, StopIDs: tok.Special().EOSIDs})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Continuations[i], want) {
			t.Errorf("greedy continuation of %v: llama.cpp %v, hone %v", p, res.Continuations[i], want)
		}
	}
}

// llama.cpp divides the chosen experts' weights by their sum; a DBRX with
// another p-norm is refused, not exported wrong.
func TestGGUFRefusesDBRXPNorm(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	writeDBRXModel(t, dir, strings.Replace(dbrxTiny, `"moe_loss_weight": 0.05`, `"moe_normalize_expert_weights": 2`, 1))
	err := export.GGUF(context.Background(), dir, filepath.Join(t.TempDir(), "x.gguf"), export.GGUFOptions{})
	if !errors.Is(err, export.ErrInvalid) || !strings.Contains(err.Error(), "moe_normalize_expert_weights") {
		t.Errorf("GGUF(dbrx p=2) = %v, want ErrInvalid naming moe_normalize_expert_weights", err)
	}
}
