package serving

import (
	"fmt"

	"hone/engine"
	"hone/export"
	"hone/safetensors"
)

// LoadOptions are the engine options a model directory (or a PEFT adapter
// directory, by its base) is served with. When every matrix of the
// checkpoint is stored as bf16, decoding reads bf16 weights widened to
// fp32, which is exact for those values and halves what each decode step
// reads: the base is held only in bf16 (FrozenBF16: 2 bytes a parameter,
// the adapter of an adapter directory attached beside it), or, for a
// mixture of experts, which the decoder does not run on a frozen bf16
// base, as fp32 weights with a bf16 copy (DecodeBF16). Other checkpoints
// decode in fp32.
func LoadOptions(dir string) (engine.Options, error) {
	files, err := engine.ModelFilesDir(dir)
	if err != nil {
		return engine.Options{}, err
	}
	c, err := engine.LoadConfig(files)
	if err != nil {
		return engine.Options{}, err
	}
	st, err := safetensors.OpenModel(files)
	if err != nil {
		return engine.Options{}, fmt.Errorf("load model %s: %w", files, err)
	}
	defer st.Close()
	for _, t := range st.Tensors() {
		if len(t.Shape) == 2 && t.DType != safetensors.BF16 {
			return engine.Options{}, nil
		}
	}
	if c.MoE() {
		return engine.Options{DecodeBF16: true}, nil
	}
	return engine.Options{FrozenBF16: true}, nil
}

// loadModel loads dir (a model or an adapter directory) on dev with its
// LoadOptions.
func loadModel(dir string, dev engine.Device) (*engine.Model, error) {
	opt, err := LoadOptions(dir)
	if err != nil {
		return nil, err
	}
	// A directory holding a quantized GGUF (export.UnpackServable)
	// decodes from its quantized matrices.
	return export.LoadDir(dir, dev, 0, func() (*engine.Model, error) { return engine.LoadWithAdapter(dir, dev, opt) })
}
