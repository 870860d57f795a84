// Package testmodel writes small random Llama models with the real Llama
// 3.1 tokenizer and chat template, for tests that need a complete model
// directory.
package testmodel

import (
	"os"
	"path/filepath"
	"testing"

	"hone/engine"
	_ "hone/engine/cpu" // the device tests that write models also train and serve them on
	"hone/internal/testassets"
)

// Llama3Tiny is a Llama 3-shaped config (the real 128256-token vocabulary)
// small enough to train in seconds.
const Llama3Tiny = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 32,
	"intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
	"rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embeddings": 2048, "tie_word_embeddings": true,
	"bos_token_id": 128000, "eos_token_id": [128001, 128009]}`

// Write creates dir holding config (JSON), weights initialised from seed,
// and the Llama 3.1 tokenizer files.
func Write(t testing.TB, dir, config string, seed uint64) {
	t.Helper()
	WriteWith(t, dir, config, "tokenizer-llama3_1", seed)
}

// WriteWith is Write with the tokenizer files of the test asset tokenizer
// (e.g. "tokenizer-llama2").
func WriteWith(t testing.TB, dir, config, tokenizer string, seed uint64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(testassets.Path(t, tokenizer+"/package/models/"+f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
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
	m.InitRandom(seed)
	if err := m.Save(dir, engine.SaveOptions{SourceDir: dir}); err != nil {
		t.Fatal(err)
	}
}
