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
// checkpoints, keeping every layer's outputs or one slot's
// (KeepAttentionLayers 1: the last layer's, or a segment's). The second
// pass checks that no slot serves a pass it was not written in.
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
					wantL, want := pass(base)
					for _, k := range []int{0, 1} {
						keep := base
						keep.KeepAttention, keep.KeepAttentionLayers = true, k
						gotL, got := pass(keep)
						for i := range want {
							if gotL[i] != wantL[i] || !slices.Equal(got[i], want[i]) {
								t.Errorf("%d slots, pass %d: loss %v keeping the attention, %v recomputing it; gradients equal %v", k, i+1, gotL[i], wantL[i], slices.Equal(got[i], want[i]))
							}
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
// same, keeping every layer's outputs or one slot's.
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
				wantL, want, wantE := pass(base)
				for _, k := range []int{0, 1} {
					keep := base
					keep.KeepAttention, keep.KeepAttentionLayers = true, k
					gotL, got, gotE := pass(keep)
					for i := range want {
						if gotL[i] != wantL[i] || !slices.Equal(got[i], want[i]) {
							t.Errorf("%d slots, batch %d: loss %v keeping the attention, %v recomputing it; gradients equal %v", k, i+1, gotL[i], wantL[i], slices.Equal(got[i], want[i]))
						}
					}
					if gotE != wantE {
						t.Errorf("%d slots: Evaluate %+v keeping the attention, %+v recomputing it", k, gotE, wantE)
					}
				}
			})
		}
	}
}

// attentionCounter counts the attention's forward calls (fp32 models call
// Device.Attention) and writes every forward (F) and backward (B) call in
// order into calls.
type attentionCounter struct {
	engine.Device
	forward int
	calls   []byte
}

func (a *attentionCounter) Attention(out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int) {
	a.forward++
	a.calls = append(a.calls, 'F')
	a.Device.Attention(out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
}

func (a *attentionCounter) AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int) {
	a.calls = append(a.calls, 'B')
	a.Device.AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v, docStart, b, t, nh, nkv, hd, window)
}

// How many times a training pass runs each layer's attention forward, and
// in what order with the backward calls (the backward pass takes layers
// 4, 3, …, 0: a B right after a B is a layer that skipped its
// recomputation). On 5 layers: recomputation runs it twice (the forward
// pass and the recomputation), but for the last layer, whose outputs its
// one slot keeps: 9 calls; keeping the outputs, once; keeping 2 slots,
// the last 2 layers once and the others twice. With
// checkpoints every 2 layers (segments 0-1, 2-3, 4) the layers that do not
// end a segment run it three times (the segment's re-forward too), 12
// calls; keeping the segment's outputs, layers 0-2 twice and 3-4, whose
// slots the forward pass left, once: 8; one slot, layer 4 once (the
// forward pass left it) and the others as without. Every 3 layers
// (segments 0-2, 3-4): 13, keeping 3 slots 7, 2 slots 9 (of segment 0-2,
// whose last layer recomputes into layer 0's slot, layer 1 keeps).
// Evaluation runs it once a layer.
func TestKeepAttentionRunsAttentionOnce(t *testing.T) {
	c, err := engine.ParseConfig([]byte(strings.Replace(memTestConfig, `"num_hidden_layers": 3`, `"num_hidden_layers": 5`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opt   engine.Options
		want  int
		calls string // with the backward calls
	}{
		{engine.Options{Recompute: true}, 9, "FFFFF" + "B" + "FBFBFBFB"}, // as one slot
		{engine.Options{Recompute: true, KeepAttention: true}, 5, "FFFFF" + "BBBBB"},
		{engine.Options{Recompute: true, KeepAttention: true, KeepAttentionLayers: 2}, 8, "FFFFF" + "BB" + "FBFBFB"},
		{engine.Options{Recompute: true, KeepAttention: true, KeepAttentionLayers: 1}, 9, "FFFFF" + "B" + "FBFBFBFB"},
		{engine.Options{Recompute: true, CheckpointEvery: 2}, 12, "FFFFF" + "FB" + "F" + "FBFB" + "F" + "FBFB"},
		{engine.Options{Recompute: true, CheckpointEvery: 2, KeepAttention: true}, 8, "FFFFF" + "B" + "F" + "BB" + "FF" + "BB"},
		{engine.Options{Recompute: true, CheckpointEvery: 2, KeepAttention: true, KeepAttentionLayers: 1}, 11, "FFFFF" + "B" + "F" + "FBFB" + "F" + "FBFB"},
		{engine.Options{Recompute: true, CheckpointEvery: 3}, 13, "FFFFF" + "F" + "FBFB" + "FF" + "FBFBFB"},
		{engine.Options{Recompute: true, CheckpointEvery: 3, KeepAttention: true}, 7, "FFFFF" + "BB" + "FF" + "BBB"},
		{engine.Options{Recompute: true, CheckpointEvery: 3, KeepAttention: true, KeepAttentionLayers: 2}, 9, "FFFFF" + "BB" + "FF" + "FBBFB"},
		{engine.Options{KeepAttention: true}, 5, "FFFFFBBBBB"}, // nothing recomputed: the option does nothing
	} {
		dev := &attentionCounter{Device: openCPU(t)}
		m := engine.New(c, dev, tc.opt)
		m.InitRandom(1)
		bt := randomBatch(t, 1, 64, c.VocabSize)
		for pass := 1; pass <= 2; pass++ {
			dev.forward, dev.calls = 0, nil
			m.ForwardBackward(bt, 1/float32(bt.Scored()))
			if dev.forward != tc.want || string(dev.calls) != tc.calls {
				t.Errorf("%+v, pass %d: %d attention forward calls (%s), want %d (%s)", tc.opt, pass, dev.forward, dev.calls, tc.want, tc.calls)
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
// recomputation, bit for bit, with recomputation, keeping the outputs
// (every layer's or two slots'), and with checkpoints.
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
	for _, opt := range []engine.Options{{Recompute: true}, {Recompute: true, KeepAttention: true}, {Recompute: true, KeepAttention: true, KeepAttentionLayers: 2},
		{Recompute: true, KeepAttention: true, CheckpointEvery: 2}} {
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

// Fit keeps the attention outputs where they fit, then as many layers'
// as fit (fp32: no per-layer bf16 weights come between), down to one
// slot, which plans what plain recomputation does, naming each in the
// savings. Where only checkpoints fit, each segment keeps its layers'
// outputs where they fit, else as many as fit.
func TestFitKeepsAttentionWhereItFits(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	dev := linearScratch{openCPU(t)}
	const B, T = 1, 1024
	plan := func(o engine.Options) int64 { return c.MemoryEstimate(dev, o, B, T) }
	keep := plan(engine.Options{Recompute: true, KeepAttention: true})
	two := plan(engine.Options{Recompute: true, KeepAttention: true, KeepAttentionLayers: 2})
	one := plan(engine.Options{Recompute: true, KeepAttention: true, KeepAttentionLayers: 1})
	plain := plan(engine.Options{Recompute: true})
	if !(keep > two && two > one && one == plain) {
		t.Fatalf("plans keeping 3, 2, 1 layers' attention outputs %d, %d, %d bytes, recomputing it %d: want decreasing, the last two equal", keep, two, one, plain)
	}
	for _, tc := range []struct {
		avail  int64
		layers int
		saving string
	}{
		{2<<30 + keep, 0, "activation recomputation keeping the attention outputs"},
		{2<<30 + keep - 1, 2, "activation recomputation keeping the attention outputs of only 2 layers"},
		{2<<30 + two, 2, "activation recomputation keeping the attention outputs of only 2 layers"},
		{2<<30 + two - 1, 1, "activation recomputation keeping the attention outputs of only 1 layer"},
		{2<<30 + plain, 1, "activation recomputation keeping the attention outputs of only 1 layer"},
	} {
		got, notes, err := c.Fit(dev, engine.Options{}, B, T, tc.avail)
		if err != nil || !got.Recompute || !got.KeepAttention || got.KeepAttentionLayers != tc.layers || got.CheckpointEvery > 1 {
			t.Errorf("in %d bytes: Fit = %+v, %v, %v; want recomputation, keeping the attention of %d layers", tc.avail, got, notes, err, tc.layers)
			continue
		}
		if s := engine.Savings(engine.Options{}, got); !slices.Equal(s, []string{tc.saving}) {
			t.Errorf("in %d bytes: savings %q, want %q", tc.avail, s, tc.saving)
		}
		if tc.layers > 0 && !strings.Contains(strings.Join(notes, "\n"), fmt.Sprintf("keeping the attention outputs of only %d of 3 layers", tc.layers)) {
			t.Errorf("in %d bytes: notes %q name no partial keep", tc.avail, notes)
		}
	}

	// 5 layers: checkpoints in segments of at most 3 (0-2, 3-4), 3 slots.
	c5, err := engine.ParseConfig([]byte(strings.Replace(memTestConfig, `"num_hidden_layers": 3`, `"num_hidden_layers": 5`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	every := c5.CheckpointSpacing()
	ck := func(k int) int64 {
		return c5.MemoryEstimate(dev, engine.Options{Recompute: true, KeepAttention: true, CheckpointEvery: every, KeepAttentionLayers: k}, B, T)
	}
	plain5 := c5.MemoryEstimate(dev, engine.Options{Recompute: true}, B, T)
	if every != 3 || !(plain5 > ck(0) && ck(0) > ck(2)) {
		t.Fatalf("segments of %d layers; plans: recomputation %d, checkpoints keeping 3 slots %d, 2 %d", every, plain5, ck(0), ck(2))
	}
	for _, tc := range []struct {
		avail  int64
		layers int
		saving string
	}{
		{2<<30 + ck(0), 0, "residual checkpoints (segments of at most 3 layers, each keeping its attention outputs)"},
		{2<<30 + ck(0) - 1, 2, "residual checkpoints (segments of at most 3 layers, keeping the attention outputs of only 2 layers a segment)"},
	} {
		got, notes, err := c5.Fit(dev, engine.Options{}, B, T, tc.avail)
		if err != nil || !got.KeepAttention || got.KeepAttentionLayers != tc.layers || got.CheckpointEvery != every {
			t.Errorf("5 layers in %d bytes: Fit = %+v, %v, %v; want checkpoints keeping the attention of %d layers a segment", tc.avail, got, notes, err, tc.layers)
			continue
		}
		if s := engine.Savings(engine.Options{}, got); !slices.Equal(s, []string{"activation recomputation", tc.saving}) {
			t.Errorf("5 layers in %d bytes: savings %q, want %q", tc.avail, s, tc.saving)
		}
	}
}

// Plain recomputation keeps the last layer's attention outputs in the
// buffers it had for one layer's: its plan equals what a counting device
// sees training allocate, and differs from the plan with checkpoints
// every 2 layers (3 layers: 3 residual buffers instead of 4; one slot a
// segment keeps none, so the shared entry's att and lse as before) by one
// residual stream alone, as before it kept any. Full and LoRA, fp32 and
// bf16.
func TestRecomputeKeepsLastLayerForNothing(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	lora := &engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: engine.LoRATargets}
	const B, T = 1, 96
	for _, opt := range []engine.Options{{Recompute: true}, {Recompute: true, BF16: true}, {Recompute: true, LoRA: lora},
		{Recompute: true, LoRA: lora, FrozenBF16: true}} {
		t.Run(fmt.Sprintf("lora=%v/bf16=%v", opt.LoRA != nil, opt.BF16 || opt.FrozenBF16), func(t *testing.T) {
			if keep, k := opt.KeptAttention(); !keep || k != 1 {
				t.Errorf("KeptAttention = %v, %d; want the last layer's", keep, k)
			}
			checkPlanEqualsCounted(t, c, opt, B, T)
			ck := opt
			ck.CheckpointEvery = 2
			checkPlanEqualsCounted(t, c, ck, B, T)
			stream := int64(4 * B * T * c.HiddenSize)
			if p, q := c.MemoryEstimate(openCPU(t), opt, B, T), c.MemoryEstimate(openCPU(t), ck, B, T); p-q != stream {
				t.Errorf("plan %d bytes, with checkpoints %d: differ by %d, want one residual stream, %d", p, q, p-q, stream)
			}
		})
	}
}
