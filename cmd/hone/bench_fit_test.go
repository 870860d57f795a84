package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
)

// `hone bench train` of a model about 4 times this machine's memory (full
// fine-tuning in fp32, 16 bytes a parameter) is refused before anything
// is allocated, naming the ranks with sharded parameters that would fit.
func TestBenchTrainRefusalNamesRanks(t *testing.T) {
	avail := engine.MemAvailable()
	if avail <= 0 {
		t.Skip("no MemAvailable in /proc/meminfo")
	}
	config := func(layers int) string {
		return fmt.Sprintf(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 1024,
			"intermediate_size": 2816, "num_hidden_layers": %d, "num_attention_heads": 8, "num_key_value_heads": 2,
			"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 2048}`, layers)
	}
	params := func(layers int) int64 {
		c, err := engine.ParseConfig([]byte(config(layers)))
		if err != nil {
			t.Fatal(err)
		}
		return c.NumParams()
	}
	one, two := params(1), params(2)
	layers := int((4*avail/16-one)/(two-one)) + 1
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(config(layers)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := benchCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"train", "--config", path, "--seq", "64", "--batch", "1", "--steps", "1"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "not enough memory") || !strings.Contains(err.Error(), "--shard-parameters") || !strings.Contains(err.Error(), "--batch ") {
		t.Fatalf("bench train of %d layers: %v; want refused naming --ranks N --shard-parameters --batch N", layers, err)
	}
	t.Log(err)
}
