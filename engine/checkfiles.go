package engine

import (
	"fmt"

	"hone/safetensors"
)

// CheckModelFiles holds the model directory dir to what loading it needs,
// without reading any weights: config.json is valid, every safetensors
// header (each shard of an index too) is well formed with every tensor's
// bytes inside its file, and the tensors are exactly those config.json
// implies, with its shapes and a float dtype. It is cheap (headers only),
// so a run can be refused before it is queued rather than fail on a worker.
func CheckModelFiles(dir string) (*Config, error) {
	c, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", dir, err)
	}
	defer st.Close()
	if err := checkTensors(c, st); err != nil {
		return nil, fmt.Errorf("model %s: %w", dir, err)
	}
	return c, nil
}

// describeShapes names the config.json fields the tensor shapes follow
// from, so a mismatch says which field disagrees with the weights.
func (c *Config) describeShapes() string {
	return fmt.Sprintf("config.json: vocab_size %d, hidden_size %d, intermediate_size %d, num_hidden_layers %d, num_attention_heads %d, num_key_value_heads %d, head_dim %d",
		c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
}
