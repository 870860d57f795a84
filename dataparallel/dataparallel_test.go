package dataparallel

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
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

// Reducer's overlapped reduction (the head's gradients first, then each
// layer's, then the embeddings' by their nonzero rows) ends with every
// rank holding the element-wise sum of the ranks' gradients, bit for bit
// as the dense sum: for tied and untied embeddings, fp32 and bf16, and
// batches that leave some embedding rows untouched on one rank or on all.
func TestReducerSumsTheGradients(t *testing.T) {
	for _, tied := range []bool{false, true} {
		for _, bf16 := range []bool{false, true} {
			cfg := testCfg(t, tied)
			const n = 2
			r := rand.New(rand.NewPCG(8, 9))
			batches := make([]*engine.Batch, n)
			for q := range batches {
				// Rank q's tokens come from its own third of the
				// vocabulary: the last third is nobody's.
				ids := make([][]int, 2)
				for i := range ids {
					ids[i] = make([]int, 12)
					for j := range ids[i] {
						ids[i][j] = q*cfg.VocabSize/3 + r.IntN(cfg.VocabSize/3)
					}
				}
				bt, err := engine.NewBatch(ids, ids, nil, cfg.VocabSize)
				if err != nil {
					t.Fatal(err)
				}
				batches[q] = bt
			}
			// Each rank's own gradients, and their sum.
			local := make([][]float32, n)
			for q := range n {
				m := engine.New(cfg, openCPU(t, nil), engine.Options{BF16: bf16})
				m.InitRandom(5)
				m.OverwriteGrads()
				m.ForwardBackward(batches[q], 0.01)
				local[q] = slices.Clone(engine.HostView(m.Dev, m.Grads.Arena))
			}
			want := make([]float32, len(local[0]))
			for q := range n {
				for i, x := range local[q] {
					want[i] += x
				}
			}
			h := newHub(n)
			got := make([][]float32, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for q := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					m := engine.New(cfg, openCPU(t, nil), engine.Options{BF16: bf16})
					m.InitRandom(5)
					m.OverwriteGrads()
					red := Start(context.Background(), hubRank{h, q}, m, nil)
					if sparse := red.rows > 0; sparse == tied {
						t.Errorf("tied %v: embeddings reduced by rows: %v", tied, sparse)
					}
					red.Attach()
					sum, _ := m.ForwardBackward(batches[q], 0.01)
					if _, errs[q] = red.Finish(sum); errs[q] == nil {
						got[q] = engine.HostView(m.Dev, m.Grads.Arena)
					}
				}()
			}
			wg.Wait()
			for q := range n {
				if errs[q] != nil {
					t.Fatalf("tied %v, bf16 %v: rank %d: %v", tied, bf16, q, errs[q])
				}
				for i := range want {
					if math.Float32bits(got[q][i]) != math.Float32bits(want[i]) {
						t.Fatalf("tied %v, bf16 %v: rank %d: gradient %d is %v, want the sum %v", tied, bf16, q, i, got[q][i], want[i])
					}
				}
			}
		}
	}
}
