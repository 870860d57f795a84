package dataparallel

import (
	"testing"

	"hone/engine"
)

func TestLayerOf(t *testing.T) {
	for _, c := range []struct {
		name string
		l    int
		ok   bool
	}{
		{"model.layers.12.self_attn.q_proj.weight", 12, true},
		{"base_model.model.model.layers.3.mlp.down_proj.lora_A.weight", 3, true},
		{"transformer.blocks.7.ffn.experts.mlp.w1", 7, true},
		{"model.embed_tokens.weight", 0, false},
		{"model.norm.weight", 0, false},
		{"model.sublayers.2.x", 0, false},
	} {
		if l, ok := layerOf(c.name); l != c.l || ok != c.ok {
			t.Errorf("layerOf(%q) = %d, %v, want %d, %v", c.name, l, ok, c.l, c.ok)
		}
	}
}

// The overlapped reduction must cover every gradient exactly once.
func TestLayerRangesCoverTheArena(t *testing.T) {
	cfg := &engine.Config{VocabSize: 64, HiddenSize: 16, IntermediateSize: 32, NumHiddenLayers: 3,
		NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 4, RMSNormEps: 1e-5, RopeTheta: 10000, MaxPositionEmbeddings: 64}
	specs := cfg.ParamSpecs()
	n := 0
	for _, s := range specs {
		n = max(n, s.Offset+s.Size())
	}
	layers, rest := layerRanges(specs, n, cfg.NumHiddenLayers)
	if len(layers) != 3 {
		t.Fatalf("got %d layer ranges, want 3 (rest %v)", len(layers), rest)
	}
	seen := make([]int, n)
	for _, rg := range append(append([][2]int{}, layers...), rest...) {
		for i := rg[0]; i < rg[1]; i++ {
			seen[i]++
		}
	}
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("arena element %d is covered %d times", i, c)
		}
	}
	// A layer split in two cannot overlap: everything goes at the end.
	bad := append([]engine.ParamSpec(nil), specs...)
	seenL1 := 0
	for i := range bad {
		if l, ok := layerOf(bad[i].Name); ok && l == 1 {
			if seenL1++; seenL1 == 2 { // a tensor in the middle of layer 1
				bad[i].Name = "model.layers.0.x"
				break
			}
		}
	}
	if layers, rest := layerRanges(bad, n, 3); layers != nil || len(rest) != 1 || rest[0] != [2]int{0, n} {
		t.Errorf("non-contiguous layers: got %v, %v; want no layers and the whole arena", layers, rest)
	}
}
