package runs_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/client"
	"hone/engine"
	"hone/store/storetest"
)

// wideModel writes a Llama model of layers decoder layers (hidden 1024)
// whose weights are a sparse file: create reads only the safetensors
// header, so the model can be far larger than the machine.
func wideModel(t *testing.T, dir, tokenizerFrom string, layers int) *engine.Config {
	t.Helper()
	cfg := fmt.Sprintf(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 1024,
		"intermediate_size": 2816, "num_hidden_layers": %d, "num_attention_heads": 8, "num_key_value_heads": 2,
		"rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embeddings": 2048, "tie_word_embeddings": true,
		"bos_token_id": 128000, "eos_token_id": [128001, 128009]}`, layers)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		copyFile(t, filepath.Join(tokenizerFrom, f), filepath.Join(dir, f))
	}
	c, err := engine.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	header := map[string]any{}
	var off int64
	for _, s := range c.ParamSpecs() {
		n := int64(2 * s.Size())
		header[s.Name] = map[string]any{"dtype": "BF16", "shape": s.Shape, "data_offsets": []int64{off, off + n}}
		off += n
	}
	h, _ := json.Marshal(header)
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	f, err := os.Create(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	binary.Write(f, binary.LittleEndian, uint64(len(h)))
	f.Write(h)
	if err := f.Truncate(8 + int64(len(h)) + off); err != nil {
		t.Fatal(err)
	}
	return c
}

// A run that does not fit this machine's memory, but would on a few
// nodes with sharded parameters, is refused by create (400) with the plan's
// numbers and the fewest nodes that fit, as "nodes" and "sharding".
func TestCreateRefusalNamesNodes(t *testing.T) {
	avail := engine.MemAvailable()
	if avail <= 0 {
		t.Skip("no MemAvailable in /proc/meminfo")
	}
	st, _ := storetest.OpenSQLite(t)
	ctx := context.Background()
	home, data, model := fixture(t)
	c := serveInProcess(t, st, home, data)
	// Full fine-tuning in fp32 holds 16 bytes a parameter: about 4 times
	// the memory available, in layers of 13M parameters.
	one := wideModel(t, filepath.Join(t.TempDir(), "one"), model, 1).NumParams()
	two := wideModel(t, filepath.Join(t.TempDir(), "two"), model, 2).NumParams()
	layers := int((4*avail/16-one)/(two-one)) + 1
	dir := filepath.Join(data, "wide")
	wideModel(t, dir, model, layers)
	req := request(data, dir)
	req.BatchRows = 1
	_, err := c.CreateRun(ctx, req)
	if client.StatusOf(err) != 400 {
		t.Fatalf("CreateRun of %d layers = %v, want 400", layers, err)
	}
	t.Log(err)
	for _, want := range []string{"not enough memory", `with "sharding": "parameters"`, `"nodes": `} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %q", err, want)
		}
	}
}
