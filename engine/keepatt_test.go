package engine_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/engine"
)

// Keeping the attention outputs (Options.KeepAttention) changes what is
// recomputed, not the math: on the LoRA fixtures (GQA with packed
// documents, biases, Mistral's sliding window, Mixtral's experts, DBRX's
// clamped Wqkv, whose backward reads ln1 from the kept att's buffer) with
// dropout, on the CPU device (fp32 and a frozen bf16 base) and the
// reference device, two passes with different masks give the loss and
// gradients of plain recomputation bit for bit, with and without residual
// checkpoints. The second pass checks that no slot serves a pass it was
// not written in.
func TestKeepAttentionSameGradientsLoRA(t *testing.T) {
	for _, dev := range []string{"cpu", "ref"} {
		for _, name := range []string{"gqa_packed", "bias_packed", "mistral_bf16_base", "mixtral_experts", "dbrx_qkv_clip"} {
			for _, base := range []engine.Options{{Recompute: true}, {Recompute: true, CheckpointEvery: 2}, {Recompute: true, BF16: true, FrozenBF16: true, MLPChunk: 5}} {
				if base.BF16 && dev == "ref" {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/every%d/bf16=%v", dev, name, base.CheckpointEvery, base.BF16), func(t *testing.T) {
					pass := func(opt engine.Options) (sums []float64, grads [][]float32) {
						m, a := loadLoRA(t, openDevice(t, dev), name, opt)
						defer m.Close()
						a.Config.Dropout = 0.3
						bt := readBatch(t, filepath.Join("testdata", "lora", name, "batch.json"), m.Config.VocabSize)
						for _, seed := range []uint64{7, 8} {
							s, g := dropoutPass(m, a, bt, seed)
							sums, grads = append(sums, s), append(grads, g)
						}
						return sums, grads
					}
					keep := base
					keep.KeepAttention = true
					wantL, want := pass(base)
					gotL, got := pass(keep)
					for i := range want {
						if gotL[i] != wantL[i] || !slices.Equal(got[i], want[i]) {
							t.Errorf("pass %d: loss %v keeping the attention, %v recomputing it; gradients equal %v", i+1, gotL[i], wantL[i], slices.Equal(got[i], want[i]))
						}
					}
				})
			}
		}
	}
}

// Full fine-tuning likewise, fp32 and bf16, on the parity fixtures (GQA,
// packed documents with biases, Mistral, Mixtral with the router's
// auxiliary loss, DBRX): the same loss and gradients as recomputing the
// attention, bit for bit, for two batches in a row after evaluating
// another (whose attention outputs no pass may take), and Evaluate the
// same.
func TestKeepAttentionSameGradientsFull(t *testing.T) {
	for _, name := range []string{"gqa", "bias_packed", "mistral", "mixtral_aux", "dbrx"} {
		for _, base := range []engine.Options{{Recompute: true}, {Recompute: true, CheckpointEvery: 2}, {Recompute: true, BF16: true, MLPChunk: 3}} {
			t.Run(fmt.Sprintf("%s/every%d/bf16=%v", name, base.CheckpointEvery, base.BF16), func(t *testing.T) {
				dir := filepath.Join("testdata", "parity", name)
				pass := func(opt engine.Options) (sums []float64, grads [][]float32, ev engine.Eval) {
					dev := openCPU(t)
					m, err := engine.Load(dir, dev, opt)
					if err != nil {
						t.Fatal(err)
					}
					defer m.Close()
					bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
					other := *bt // the same documents, other tokens
					other.IDs = slices.Clone(bt.IDs)
					for i := range other.IDs {
						other.IDs[i] = (other.IDs[i] + 1) % int32(m.Config.VocabSize)
					}
					m.Evaluate(&other) // leaves every layer's outputs on another batch in the slots
					for _, b := range []*engine.Batch{bt, &other} {
						m.ZeroGrad()
						s, _ := m.ForwardBackward(b, 1/float32(b.Scored()))
						sums, grads = append(sums, s), append(grads, slices.Clone(engine.HostView(dev, m.Grads.Arena)))
					}
					return sums, grads, m.Evaluate(bt)
				}
				keep := base
				keep.KeepAttention = true
				wantL, want, wantE := pass(base)
				gotL, got, gotE := pass(keep)
				for i := range want {
					if gotL[i] != wantL[i] || !slices.Equal(got[i], want[i]) {
						t.Errorf("batch %d: loss %v keeping the attention, %v recomputing it; gradients equal %v", i+1, gotL[i], wantL[i], slices.Equal(got[i], want[i]))
					}
				}
				if gotE != wantE {
					t.Errorf("Evaluate %+v keeping the attention, %+v recomputing it", gotE, wantE)
				}
			})
		}
	}
}

// attentionCounter counts the attention's forward calls (fp32 models call
// Device.Attention).
type attentionCounter struct {
	engine.Device
	forward int
}

func (a *attentionCounter) Attention(out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int) {
	a.forward++
	a.Device.Attention(out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
}

// How many times a training pass runs each layer's attention forward. On
// 5 layers: recomputation runs it twice (the forward pass and the
// recomputation), 10 calls; keeping the outputs, once. With checkpoints
// every 2 layers (segments 0-1, 2-3, 4) the layers that do not end a
// segment run it three times (the segment's re-forward too), 12 calls;
// keeping the segment's outputs, layers 0-2 twice and 3-4, whose slots
// the forward pass left, once: 8. Evaluation runs it once a layer.
func TestKeepAttentionRunsAttentionOnce(t *testing.T) {
	c, err := engine.ParseConfig([]byte(strings.Replace(memTestConfig, `"num_hidden_layers": 3`, `"num_hidden_layers": 5`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opt  engine.Options
		want int
	}{
		{engine.Options{Recompute: true}, 10},
		{engine.Options{Recompute: true, KeepAttention: true}, 5},
		{engine.Options{Recompute: true, CheckpointEvery: 2}, 12},
		{engine.Options{Recompute: true, CheckpointEvery: 2, KeepAttention: true}, 8},
		{engine.Options{KeepAttention: true}, 5}, // nothing recomputed: the option does nothing
	} {
		dev := &attentionCounter{Device: openCPU(t)}
		m := engine.New(c, dev, tc.opt)
		m.InitRandom(1)
		bt := randomBatch(t, 1, 64, c.VocabSize)
		for pass := 1; pass <= 2; pass++ {
			dev.forward = 0
			m.ForwardBackward(bt, 1/float32(bt.Scored()))
			if dev.forward != tc.want {
				t.Errorf("%+v, pass %d: %d attention forward calls, want %d", tc.opt, pass, dev.forward, tc.want)
			}
		}
		dev.forward = 0
		m.Evaluate(bt)
		if dev.forward != 5 {
			t.Errorf("%+v: Evaluate ran the attention %d times, want 5", tc.opt, dev.forward)
		}
		m.Close()
	}
}

// oneRank is ShardHooks for a single rank holding every parameter: a
// gather copies the part in, a release adds its gradients up.
type oneRank struct {
	c             *engine.Config
	params, grads []float32
}

func (h *oneRank) Gather(p int, use engine.Use, params, grads []float32) {
	for _, s := range h.c.PartSegments(p, 1) {
		if use&engine.UseParams != 0 {
			copy(params[s.At:s.At+s.Hi-s.Lo], h.params[s.Lo:s.Hi])
		}
		if use&engine.UseGrads != 0 {
			clear(grads[s.At : s.At+s.Hi-s.Lo])
		}
	}
}

func (h *oneRank) Prefetch(p int, params []float32) { h.Gather(p, engine.UseParams, params, nil) }
func (h *oneRank) PrefetchNext(int, []float32)      {} // the next pass's Gather copies

func (h *oneRank) Release(p int, use engine.Use, grads []float32) {
	if use&engine.UseGrads == 0 {
		return
	}
	for _, s := range h.c.PartSegments(p, 1) {
		for i, g := range grads[s.At : s.At+s.Hi-s.Lo] {
			h.grads[s.Lo+i] += g
		}
	}
}

// A model with sharded parameters (ZeRO-3) keeps its attention outputs
// as any other: its gradients equal the unsharded model's without
// recomputation, bit for bit, with recomputation, keeping the outputs,
// and with checkpoints.
func TestKeepAttentionSharded(t *testing.T) {
	c, err := engine.ParseConfig([]byte(strings.Replace(memTestConfig, `"num_hidden_layers": 3`, `"num_hidden_layers": 5`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	bt := randomBatch(t, 2, 48, c.VocabSize)
	ref := engine.New(c, openCPU(t), engine.Options{})
	defer ref.Close()
	ref.InitRandom(7)
	ref.ZeroGrad()
	wantL, _ := ref.ForwardBackward(bt, 1/float32(bt.Scored()))
	want := engine.HostView(ref.Dev, ref.Grads.Arena)
	for _, opt := range []engine.Options{{Recompute: true}, {Recompute: true, KeepAttention: true}, {Recompute: true, KeepAttention: true, CheckpointEvery: 2}} {
		opt.ShardRanks = 1
		m := engine.New(c, openCPU(t), opt)
		h := &oneRank{c: c, params: slices.Clone(engine.HostView(ref.Dev, ref.Params.Arena)), grads: make([]float32, c.NumParams())}
		m.Shards = h
		got, _ := m.ForwardBackward(bt, 1/float32(bt.Scored()))
		if got != wantL || !slices.Equal(h.grads, want) {
			t.Errorf("sharded %+v: loss %v, unsharded %v; gradients equal %v", opt, got, wantL, slices.Equal(h.grads, want))
		}
		m.Close()
	}
}

// Fit keeps the attention outputs where they fit, and recomputes them
// where only plain recomputation fits (fp32: no per-layer bf16 weights
// come between), naming each in the savings.
func TestFitKeepsAttentionWhereItFits(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	dev := linearScratch{openCPU(t)}
	const B, T = 1, 1024
	keep := c.MemoryEstimate(dev, engine.Options{Recompute: true, KeepAttention: true}, B, T)
	plain := c.MemoryEstimate(dev, engine.Options{Recompute: true}, B, T)
	if keep <= plain {
		t.Fatalf("plan keeping the attention %d bytes, recomputing it %d: want more", keep, plain)
	}
	for _, tc := range []struct {
		avail  int64
		keep   bool
		saving string
	}{
		{2<<30 + keep, true, "activation recomputation keeping the attention outputs"},
		{2<<30 + keep - 1, false, "activation recomputation"},
		{2<<30 + plain, false, "activation recomputation"},
	} {
		got, notes, err := c.Fit(dev, engine.Options{}, B, T, tc.avail)
		if err != nil || !got.Recompute || got.KeepAttention != tc.keep || got.CheckpointEvery > 1 {
			t.Errorf("in %d bytes: Fit = %+v, %v, %v; want recomputation, keeping the attention %v", tc.avail, got, notes, err, tc.keep)
			continue
		}
		if s := engine.Savings(engine.Options{}, got); !slices.Equal(s, []string{tc.saving}) {
			t.Errorf("in %d bytes: savings %q, want %q", tc.avail, s, tc.saving)
		}
	}
}
