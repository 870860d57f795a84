package engine_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
)

const checkConfig = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64, "hidden_size": 16,
	"intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
	"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 128, "tie_word_embeddings": false}`

// shardedModel writes a small random model in several safetensors shards
// with an index, and returns its directory and shard files.
func shardedModel(t *testing.T) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(checkConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := engine.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(c, cpu.New(1), engine.Options{})
	m.InitRandom(1)
	if err := m.Save(dir, engine.SaveOptions{MaxShardBytes: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	shards, _ := filepath.Glob(filepath.Join(dir, "model-*.safetensors"))
	if len(shards) < 2 {
		t.Fatalf("want several shards, got %v", shards)
	}
	return dir, shards
}

// CheckModelFiles reads every shard's header of a sharded model: a
// truncated shard, a shard missing and a config.json that disagrees with
// the weights are each refused naming the file, the tensor and the sizes.
func TestCheckModelFilesSharded(t *testing.T) {
	dir, shards := shardedModel(t)
	if _, err := engine.CheckModelFiles(dir); err != nil {
		t.Fatalf("CheckModelFiles(good model) = %v", err)
	}

	last := shards[len(shards)-1]
	fi, _ := os.Stat(last)
	os.Truncate(last, fi.Size()-8)
	_, err := engine.CheckModelFiles(dir)
	if err == nil || !strings.Contains(err.Error(), last) || !strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), "tensor ") {
		t.Errorf("CheckModelFiles(truncated shard) = %v, want an error naming %s, a tensor and the truncation", err, last)
	}
	os.Remove(last)
	if _, err := engine.CheckModelFiles(dir); err == nil || !strings.Contains(err.Error(), filepath.Base(last)) {
		t.Errorf("CheckModelFiles(missing shard) = %v, want an error naming %s", err, filepath.Base(last))
	}

	dir, _ = shardedModel(t)
	var cfg map[string]any
	json.Unmarshal([]byte(checkConfig), &cfg)
	cfg["intermediate_size"] = 48
	b, _ := json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	_, err = engine.CheckModelFiles(dir)
	if err == nil || !strings.Contains(err.Error(), "[32 16]") || !strings.Contains(err.Error(), "[48 16]") ||
		!strings.Contains(err.Error(), "intermediate_size 48") || !strings.Contains(err.Error(), ".safetensors: tensor ") {
		t.Errorf("CheckModelFiles(intermediate_size 48 over weights of 32) = %v, want the file, the tensor and both shapes", err)
	}
}
