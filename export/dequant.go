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
// layout, stacked experts split. Each Fill reads only the rows it is asked
// for (whole heads of Q and K, whose rows are permuted within a head), so
// writing them holds one writer's chunk at a time, not a tensor: a 70B
// model's token embeddings alone are 4 GB in float32.
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
		cols := p.Shape[len(p.Shape)-1]
		rows, first, unit := p.Size()/cols, 0, 1 // rows of this tensor, its first in the file's, rows read together
		if expert >= 0 {
			first = expert * rows
		}
		if heads > 0 {
			unit = rows / heads
		}
		var buf []float32 // reused across the writer's chunks of this tensor
		out = append(out, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Fill: func(dst []float32, off int) error {
			r0, r1 := off/cols/unit*unit, min(rows, ((off+len(dst)+cols-1)/cols+unit-1)/unit*unit)
			n := (r1 - r0) * cols
			if cap(buf) < n {
				buf = make([]float32, n)
			}
			x := buf[:n]
			if err := g.Float32Rows(ti, x, first+r0, first+r1); err != nil {
				return err
			}
			if heads > 0 {
				x = UnpermuteQK(x, (r1-r0)/unit, cols)
			}
			copy(dst, x[off-r0*cols:])
			if off+len(dst) >= p.Size() { // the last chunk: the closure outlives the writing
				buf = nil
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
