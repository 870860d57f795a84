package export

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"hone/engine"
	"hone/gguf"
	"hone/safetensors"
)

// loraModules maps a PEFT module to llama.cpp's tensor and, for the query
// and key projections, whose rows llama.cpp permutes, which head count.
var loraModules = map[string]string{
	"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
	"mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}

var peftName = regexp.MustCompile(`layers\.(\d+)\.(self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_([AB])\.weight$`)

// GGUFAdapter writes the PEFT LoRA adapter in dir as llama.cpp's GGUF LoRA
// adapter at out (general.type "adapter": lora_a (r, in) and lora_b
// (out, r) per adapted matrix, the query and key lora_b rows permuted as
// the base's, adapter.lora.alpha such that llama.cpp's alpha/r is the
// adapter's scale, rsLoRA's included), its base model as a GGUF file
// beside it (NAME.base.gguf, in opt.DType), and an ollama Modelfile with
// FROM the base and ADAPTER the adapter.
func GGUFAdapter(ctx context.Context, dir, out string, opt GGUFOptions) error {
	if !engine.IsAdapterDir(dir) {
		return fmt.Errorf("%w: %s is not a PEFT adapter directory (no %s)", ErrInvalid, dir, engine.AdapterConfigFile)
	}
	base, err := engine.AdapterBaseDir(dir)
	if err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, engine.AdapterConfigFile))
	if err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	lc, err := engine.ParseAdapterConfig(raw)
	if err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	c, err := engine.LoadConfig(base)
	if err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	if c.MoE() || c.IsDBRX() {
		return fmt.Errorf("%w: --adapter-only writes dense Llama adapters; export %s merged instead", ErrInvalid, dir)
	}
	st, err := safetensors.Open(filepath.Join(dir, engine.AdapterWeightsFile))
	if err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	defer st.Close()
	if opt.Name == "" {
		opt.Name = filepath.Base(filepath.Clean(dir))
	}
	w := gguf.NewWriter()
	w.String("general.architecture", "llama")
	w.String("general.type", "adapter")
	w.String("general.name", opt.Name)
	w.String("adapter.type", "lora")
	rank := 0
	for _, info := range st.Tensors() {
		m := peftName.FindStringSubmatch(info.Name)
		if m == nil {
			return fmt.Errorf("%w: %s: adapter tensor %q is not a LoRA matrix of a Llama projection", ErrInvalid, dir, info.Name)
		}
		if m[3] == "A" {
			rank = info.Shape[0]
		}
		heads := 0
		switch m[2] {
		case "self_attn.q_proj":
			heads = c.NumAttentionHeads
		case "self_attn.k_proj":
			heads = c.NumKeyValueHeads
		}
		layer, _ := strconv.Atoi(m[1])
		name := fmt.Sprintf("blk.%d.%s.weight.lora_%s", layer, loraModules[m[2]], strings.ToLower(m[3]))
		info := info
		w.AddTensor(gguf.Tensor{Name: name, Shape: info.Shape, Type: gguf.F32, Fill: func(dst []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			x := make([]float32, info.NumElements())
			if err := st.Float32(info.Name, x); err != nil {
				return err
			}
			if m[3] == "B" && heads > 0 {
				x = PermuteQK(x, heads, info.Shape[1])
			}
			gguf.QuantizeRow(gguf.F32, dst, x)
			return nil
		}})
	}
	if rank == 0 {
		return fmt.Errorf("%w: %s holds no LoRA matrices", ErrInvalid, dir)
	}
	// llama.cpp scales by alpha / rank.
	w.Float32("adapter.lora.alpha", lc.Scale()*float32(rank))
	baseOut := strings.TrimSuffix(out, ".gguf") + ".base.gguf"
	if err := GGUF(ctx, base, baseOut, opt); err != nil {
		return err
	}
	if err := w.WriteFile(out); err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	mf := filepath.Join(filepath.Dir(out), ModelfileName)
	b, err := os.ReadFile(mf)
	if err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	b = []byte(strings.Replace(string(b), "\n", fmt.Sprintf("\nADAPTER ./%s\n", filepath.Base(out)), 1))
	if err := engine.WriteFileAtomic(mf, b); err != nil {
		return fmt.Errorf("export %s: write %s: %w", dir, mf, err)
	}
	return nil
}

// PEFT copies the PEFT adapter directory dir (its config and weights) to
// the directory out, for --format hf --adapter-only.
func PEFT(dir, out string) error {
	if !engine.IsAdapterDir(dir) {
		return fmt.Errorf("%w: %s is not a PEFT adapter directory (no %s)", ErrInvalid, dir, engine.AdapterConfigFile)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	for _, name := range []string{engine.AdapterConfigFile, engine.AdapterWeightsFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("export %s: %w", dir, err)
		}
		if err := engine.WriteFileAtomic(filepath.Join(out, name), b); err != nil {
			return fmt.Errorf("export %s: %w", dir, err)
		}
	}
	return nil
}
