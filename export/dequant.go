package export

import (
	"fmt"
	"slices"
	"strings"

	"hone/engine"
	"hone/gguf"
	"hone/safetensors"
)

// GGUFWeights reads the tensors of a llama-architecture GGUF file that
// hone exported (dense or Mixtral) back as the HF-named float32 parameters
// of cfg: quantized tensors dequantized, the Q/K rows returned to HF's
// layout, stacked experts split. Each Fill reads its tensor when called,
// so writing them holds one tensor at a time.
func GGUFWeights(path string, cfg *engine.Config) ([]safetensors.Tensor, func() error, error) {
	g, err := gguf.Open(path)
	if err != nil {
		return nil, nil, err
	}
	if arch := g.String("general.architecture"); arch != "llama" {
		g.Close()
		return nil, nil, fmt.Errorf("%w: %s: architecture %q (hone reads llama GGUF files back)", ErrInvalid, path, arch)
	}
	var out []safetensors.Tensor
	for _, p := range cfg.ParamSpecs() {
		name, expert := ggufName(p.Name), -1
		if strings.Contains(p.Name, ".block_sparse_moe.experts.") {
			rest := strings.TrimPrefix(p.Name, "model.layers.")
			layer, rest, _ := strings.Cut(rest, ".block_sparse_moe.experts.")
			e, mat, _ := strings.Cut(rest, ".")
			fmt.Sscan(e, &expert)
			name = "blk." + layer + "." + expertNames[mat]
		}
		ti, ok := g.Tensor(name)
		want := p.Shape
		if expert >= 0 {
			want = append([]int{cfg.NumLocalExperts}, p.Shape...)
		}
		if !ok || !slices.Equal(ti.Shape, want) {
			g.Close()
			return nil, nil, fmt.Errorf("%w: %s: tensor %s (for %s) missing or not of shape %v", ErrInvalid, path, name, p.Name, want)
		}
		heads := 0
		switch {
		case strings.Contains(p.Name, ".q_proj."):
			heads = cfg.NumAttentionHeads
		case strings.Contains(p.Name, ".k_proj."):
			heads = cfg.NumKeyValueHeads
		}
		var x []float32 // the decoded tensor while the writer takes it in chunks
		out = append(out, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Fill: func(dst []float32, off int) error {
			if x == nil {
				all, _, err := g.Float32(name)
				if err != nil {
					return err
				}
				x = all
				if expert >= 0 {
					n := p.Size()
					x = all[expert*n : (expert+1)*n]
				}
				if heads > 0 {
					x = UnpermuteQK(x, heads, len(x)/p.Shape[0])
				}
			}
			copy(dst, x[off:])
			if off+len(dst) >= len(x) {
				x = nil
			}
			return nil
		}})
	}
	return out, g.Close, nil
}

// UnpermuteQK undoes PermuteQK.
func UnpermuteQK(x []float32, heads, cols int) []float32 {
	out := make([]float32, len(x))
	hd := len(x) / cols / heads
	half := hd / 2
	for h := 0; h < heads; h++ {
		for i := 0; i < half; i++ {
			for j := 0; j < 2; j++ {
				src := (h*hd + 2*i + j) * cols
				dst := (h*hd + j*half + i) * cols
				copy(out[dst:dst+cols], x[src:src+cols])
			}
		}
	}
	return out
}
