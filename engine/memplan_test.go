package engine_test

import (
	"fmt"
	"strings"
	"testing"

	"hone/engine"
	"hone/optim"
)

// countedPeak trains one step of opt on a counting device and returns the
// peak it saw plus the attention scratch the device states it keeps, and
// the bytes live right after New and attaching the adapter.
func countedPeak(t *testing.T, c *engine.Config, opt engine.Options, B, T int) (peak, weights int64) {
	t.Helper()
	dev := engine.NewCountingDevice(openCPU(t))
	m := engine.New(c, dev, opt)
	defer m.Close()
	m.InitRandom(1)
	bt := randomBatch(t, B, T, c.VocabSize)
	if opt.LoRA != nil {
		a, err := engine.NewAdapter(c, dev, *opt.LoRA)
		if err != nil {
			t.Fatal(err)
		}
		a.InitPEFT(2)
		if err := m.Attach(a); err != nil {
			t.Fatal(err)
		}
		weights = dev.Memory().Live
		mom, vel := dev.Alloc(len(a.Params)), dev.Alloc(len(a.Params))
		defer dev.Free(mom)
		defer dev.Free(vel)
		a.ZeroGrad()
		m.ForwardBackwardDropout(bt, 1/float32(bt.Scored()), 3) // as training runs it: with the adapter's dropout
		dev.AdamW(a.Params, a.Grads, mom, vel, nil, engine.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 1})
	} else {
		weights = dev.Memory().Live
		o, err := optim.NewAdamW(m, optim.DefaultAdamW)
		if err != nil {
			t.Fatal(err)
		}
		m.ZeroGrad()
		m.ForwardBackward(bt, 1/float32(bt.Scored()))
		if _, err := o.Step(m, 1e-4); err != nil {
			t.Fatal(err)
		}
	}
	return dev.Memory().Peak + engine.AttentionScratchFor(dev, opt.BF16, B, T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim), weights
}

// The plan `hone bench train --plan` prints is exactly what a counting
// device sees training allocate, its parts add up to its peak, and its
// weights and gradients parts are what New allocates before any batch
// (full fine-tuning, LoRA on fp32 and frozen bf16 bases, recomputation,
// bf16).
func TestMemoryPlanEqualsCountedPeak(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	lora := &engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: engine.LoRATargets}
	for _, tc := range []struct {
		opt  engine.Options
		B, T int
	}{
		{engine.Options{}, 2, 64},
		{engine.Options{BF16: true, Recompute: true}, 1, 128},
		{engine.Options{LoRA: lora}, 2, 64},
		{engine.Options{LoRA: lora, FrozenBF16: true, Recompute: true}, 1, 160},
		{engine.Options{LoRA: lora, BF16: true, FrozenBF16: true}, 2, 48},
		{engine.Options{Recompute: true, MLPChunk: 50}, 2, 96},                                // the MLP in chunks
		{engine.Options{LoRA: lora, FrozenBF16: true, Recompute: true, MLPChunk: 64}, 1, 160}, // the MLP in chunks
		{engine.Options{Recompute: true, CheckpointEvery: 2}, 2, 64},                          // residual checkpoints
		{engine.Options{LoRA: lora, FrozenBF16: true, Recompute: true, CheckpointEvery: 2, MLPChunk: 40}, 1, 96},
		// Attention outputs kept for the recomputation: every layer's, or a segment's.
		{engine.Options{Recompute: true, KeepAttention: true}, 2, 64},
		{engine.Options{BF16: true, Recompute: true, KeepAttention: true}, 1, 128},
		{engine.Options{LoRA: lora, FrozenBF16: true, Recompute: true, KeepAttention: true, MLPChunk: 64}, 1, 160},
		{engine.Options{Recompute: true, KeepAttention: true, CheckpointEvery: 2}, 2, 64},
		{engine.Options{LoRA: lora, FrozenBF16: true, Recompute: true, KeepAttention: true, CheckpointEvery: 2, MLPChunk: 40}, 1, 96},
		// Only some layers' (3 layers; segments 0-1, 2).
		{engine.Options{Recompute: true, KeepAttention: true, KeepAttentionLayers: 2}, 2, 64},
		{engine.Options{BF16: true, Recompute: true, KeepAttention: true, KeepAttentionLayers: 1}, 1, 128},
		{engine.Options{LoRA: lora, FrozenBF16: true, Recompute: true, KeepAttention: true, KeepAttentionLayers: 2, MLPChunk: 64}, 1, 160},
		{engine.Options{Recompute: true, KeepAttention: true, KeepAttentionLayers: 1, CheckpointEvery: 2}, 2, 64},
	} {
		t.Run(fmt.Sprintf("lora=%v/bf16=%v/frozen=%v/recompute=%v/keep=%v,%d/every%d/B%dT%d", tc.opt.LoRA != nil, tc.opt.BF16, tc.opt.FrozenBF16, tc.opt.Recompute, tc.opt.KeepAttention, tc.opt.KeepAttentionLayers, tc.opt.CheckpointEvery, tc.B, tc.T), func(t *testing.T) {
			checkPlanEqualsCounted(t, c, tc.opt, tc.B, tc.T)
		})
	}
	// Attention wider than the hidden size (head_dim 32 × 4 heads = 128 >
	// 64): the buffers shared between C- and QD-wide values take the wider.
	wide, err := engine.ParseConfig([]byte(strings.Replace(memTestConfig, `"num_key_value_heads": 2,`, `"num_key_value_heads": 2, "head_dim": 32,`, 1)))
	if err != nil || wide.QDim() <= wide.HiddenSize {
		t.Fatalf("wide config: %v (q dim %d)", err, wide.QDim())
	}
	for _, opt := range []engine.Options{{}, {Recompute: true, CheckpointEvery: 2}, {LoRA: lora, FrozenBF16: true, Recompute: true, MLPChunk: 40},
		{Recompute: true, KeepAttention: true}, {Recompute: true, KeepAttention: true, CheckpointEvery: 2}, {Recompute: true, KeepAttention: true, KeepAttentionLayers: 2}} {
		t.Run(fmt.Sprintf("wide/lora=%v/recompute=%v/keep=%v,%d/every%d", opt.LoRA != nil, opt.Recompute, opt.KeepAttention, opt.KeepAttentionLayers, opt.CheckpointEvery), func(t *testing.T) {
			checkPlanEqualsCounted(t, wide, opt, 1, 96)
		})
	}
	// And narrower (head_dim 8 × 4 heads = 32 < 64): the kept att's buffer
	// is hidden-wide, for ln1 in the backward pass.
	narrow, err := engine.ParseConfig([]byte(strings.Replace(memTestConfig, `"num_key_value_heads": 2,`, `"num_key_value_heads": 2, "head_dim": 8,`, 1)))
	if err != nil || narrow.QDim() >= narrow.HiddenSize {
		t.Fatalf("narrow config: %v (q dim %d)", err, narrow.QDim())
	}
	for _, opt := range []engine.Options{{Recompute: true}, {Recompute: true, KeepAttention: true}, {Recompute: true, KeepAttention: true, CheckpointEvery: 2},
		{Recompute: true, KeepAttention: true, KeepAttentionLayers: 2}} {
		t.Run(fmt.Sprintf("narrow/keep=%v,%d/every%d", opt.KeepAttention, opt.KeepAttentionLayers, opt.CheckpointEvery), func(t *testing.T) {
			checkPlanEqualsCounted(t, narrow, opt, 1, 96)
		})
	}
}

// With LoRA dropout the plan still equals what training allocates, plus
// the host mask the counting device does not see (one element per element
// of the dropped input). With recomputation the MLP runs in chunks under
// dropout too, so its dropout buffers are (chunk, intermediate) and the
// widest are the attention's (N, hidden); without, (N, intermediate).
func TestLoRADropoutPlanEqualsCountedPeak(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	C, F := int64(c.HiddenSize), int64(c.IntermediateSize)
	lora := &engine.LoRAConfig{Rank: 4, Alpha: 8, Dropout: 0.1, Targets: engine.LoRATargets}
	for _, tc := range []struct {
		opt  engine.Options
		B, T int
		mask int64 // elements of the host mask
	}{
		{engine.Options{LoRA: lora}, 2, 48, 2 * 48 * F},
		{engine.Options{LoRA: lora, FrozenBF16: true, Recompute: true, MLPChunk: 8}, 1, 160, max(160*C, 8*F)},
		{engine.Options{LoRA: lora, FrozenBF16: true, Recompute: true, CheckpointEvery: 2, MLPChunk: 40}, 1, 96, max(96*C, 40*F)},
		{engine.Options{LoRA: lora, FrozenBF16: true, Recompute: true, KeepAttention: true, MLPChunk: 8}, 1, 160, max(160*C, 8*F)},
	} {
		t.Run(fmt.Sprintf("recompute=%v/keep=%v/chunk=%d/B%dT%d", tc.opt.Recompute, tc.opt.KeepAttention, tc.opt.MLPChunk, tc.B, tc.T), func(t *testing.T) {
			plan := c.MemoryPlan(openCPU(t), tc.opt, tc.B, tc.T)
			peak, _ := countedPeak(t, c, tc.opt, tc.B, tc.T)
			if want := peak + 4*tc.mask; plan.PeakBytes != want {
				t.Errorf("plan peak %d bytes, counted %d + host mask %d = %d (parts %v)", plan.PeakBytes, peak, 4*tc.mask, want, plan.Parts)
			}
		})
	}
}

// checkPlanEqualsCounted holds c's plan for opt at B×T to a counting
// device's peak (see TestMemoryPlanEqualsCountedPeak).
func checkPlanEqualsCounted(t *testing.T, c *engine.Config, opt engine.Options, B, T int) {
	t.Helper()
	plan := c.MemoryPlan(openCPU(t), opt, B, T)
	var sum int64
	for _, b := range plan.Parts {
		sum += b
	}
	if sum != plan.PeakBytes {
		t.Errorf("parts add up to %d bytes, peak_bytes is %d", sum, plan.PeakBytes)
	}
	peak, weights := countedPeak(t, c, opt, B, T)
	if plan.PeakBytes != peak {
		t.Errorf("plan peak %d bytes, counted %d (parts %v)", plan.PeakBytes, peak, plan.Parts)
	}
	if opt.KeepAttentionLayers > 0 { // fewer slots than keeping them all (in these configs)
		all := opt
		all.KeepAttentionLayers = 0
		if allPeak, _ := countedPeak(t, c, all, B, T); peak >= allPeak {
			t.Errorf("keeping %d layers' attention outputs: counted %d bytes, keeping every layer's %d", opt.KeepAttentionLayers, peak, allPeak)
		}
	}
	// New and NewAdapter allocate the weights and the gradients; the
	// optimizer's moments come later.
	if want := plan.Parts[engine.PartWeights] + plan.Parts[engine.PartGradients]; weights != want {
		t.Errorf("after New %d bytes are live, plan's weights + gradients %d", weights, want)
	}
}

// Nothing that training allocates through the device grows faster than T:
// the counted peak at T, 2T and 3T is affine in T (a T×T mask or score
// buffer would make the second difference positive). The attention
// kernel's own scratch is the device's and is checked in engine/cpu.
func TestTrainingMemoryLinearInT(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	lora := &engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: engine.LoRATargets}
	for _, opt := range []engine.Options{{Recompute: true}, {LoRA: lora, FrozenBF16: true},
		{Recompute: true, KeepAttention: true}, {LoRA: lora, FrozenBF16: true, Recompute: true, KeepAttention: true, CheckpointEvery: 2}} {
		const T = 256 // from the loss chunk (256 tokens) on, the logits chunk stays put
		var peaks [3]int64
		for i := range peaks {
			dev := openCPU(t)
			p, _ := countedPeak(t, c, opt, 1, (i+1)*T)
			peaks[i] = p - engine.AttentionScratchFor(dev, opt.BF16, 1, (i+1)*T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
		}
		if d1, d2 := peaks[1]-peaks[0], peaks[2]-peaks[1]; d1 != d2 {
			t.Errorf("lora=%v/keep=%v: counted peaks at T=%d,%d,%d are %v: steps %d and %d, want equal (memory linear in T)", opt.LoRA != nil, opt.KeepAttention, T, 2*T, 3*T, peaks, d1, d2)
		}
	}
}

// A run that does not fit is refused with the settings that would fit: the
// longest context at one row is the longest whose plan (with Fit's savings)
// is within the budget, one token more is not, and the refusal names it.
func TestFitRefusalNamesWhatFits(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	dev := linearScratch{openCPU(t)}
	opt := engine.Options{BF16: true}
	saved := engine.Options{BF16: true, Recompute: true, CompactBF16: true, CheckpointEvery: c.CheckpointSpacing()}
	avail := int64(2<<30) + c.MemoryEstimate(dev, saved, 1, 1000) + 1 // the budget keeps 2 GiB
	n := c.LongestContext(dev, opt, 1, 2048, avail)
	if n != 1000 {
		t.Errorf("LongestContext = %d, want 1000 (plan %d bytes at 1000, %d at 1001, budget %d)",
			n, c.MemoryEstimate(dev, saved, 1, 1000), c.MemoryEstimate(dev, saved, 1, 1001), engine.MemoryBudget(avail))
	}
	_, notes, err := c.Fit(dev, opt, 4, 1000, avail)
	if err == nil || !strings.Contains(err.Error(), "context length 1000 at 1 row") || !strings.Contains(err.Error(), "1 row per micro-batch") {
		t.Errorf("Fit at 4×1000 = %v, want a refusal naming 1 row per micro-batch and context length 1000 at 1 row", err)
	}
	if len(notes) != 5 {
		t.Errorf("notes %q, want recomputation keeping the attention outputs, per-layer bf16, keeping only the last layer's, and residual checkpoints keeping them and recomputing them", notes)
	}
	if got := c.LongestContext(dev, opt, 1, 900, avail); got != 900 {
		t.Errorf("LongestContext capped at 900 = %d", got)
	}
}

// linearScratch states attention scratch linear in T, as a flash-style
// kernel keeps: the CPU device's blocked attention switches block size
// with T, so its scratch is not monotone in T.
type linearScratch struct{ engine.Device }

func (linearScratch) AttentionScratch(B, T, nh, nkv, hd int) int64 { return 4 * int64(B*T*nh*(hd+2)) }

// Residual checkpoints change only what is kept, not the math: a model of
// 5 layers (checkpoint segments that share their buffers) gives the same
// loss and gradients with checkpoints every 2 or 3 layers as with every
// residual kept, bit for bit (the same operations run on the same inputs).
// The parity tests hold the path without checkpoints to the float64
// reference.
func TestCheckpointsSameGradients(t *testing.T) {
	c, err := engine.ParseConfig([]byte(strings.Replace(memTestConfig, `"num_hidden_layers": 3`, `"num_hidden_layers": 5`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	grads := func(opt engine.Options) (float64, []float32) {
		dev := openCPU(t)
		m := engine.New(c, dev, opt)
		defer m.Close()
		m.InitRandom(7)
		bt := randomBatch(t, 2, 48, c.VocabSize)
		m.ZeroGrad()
		sum, _ := m.ForwardBackward(bt, 1/float32(bt.Scored()))
		return sum, append([]float32(nil), engine.HostView(dev, m.Grads.Arena)...)
	}
	for _, base := range []engine.Options{{Recompute: true}, {Recompute: true, BF16: true, MLPChunk: 40}} {
		wantLoss, want := grads(base)
		for _, keep := range []int{-1, 0, 2} { // keeping the (segment's) attention outputs too, every layer's or 2 slots'
			for _, k := range []int{0, 2, 3} {
				if k == 0 && keep < 0 {
					continue
				}
				opt := base
				opt.CheckpointEvery, opt.KeepAttention, opt.KeepAttentionLayers = k, keep >= 0, max(keep, 0)
				loss, got := grads(opt)
				if loss != wantLoss {
					t.Errorf("bf16=%v, keep=%v, every %d layers: loss %v, without checkpoints %v", base.BF16, keep, k, loss, wantLoss)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Errorf("bf16=%v, keep=%v, every %d layers: gradient %d = %v, without checkpoints %v", base.BF16, keep, k, i, got[i], want[i])
						break
					}
				}
			}
		}
	}
}

// At a longer context the memory savings of recomputation change what is
// kept, not the math: with every activation stored and nothing recomputed,
// and with recomputation (whose last layer keeps its attention outputs),
// residual checkpoints every 2 layers (the first and last streams sharing
// a buffer, the batch embedded again) and the final norm run per loss
// chunk, the loss and gradients are equal bit for bit, for full
// fine-tuning (fp32 and bf16) and a LoRA adapter on a frozen bf16 base.
// ln1 recomputed into mid's buffer and datt in dln's are on both sides;
// the parity tests hold them to the float64 reference.
func TestLongContextSavingsSameGradients(t *testing.T) {
	five := strings.Replace(memTestConfig, `"num_hidden_layers": 3`, `"num_hidden_layers": 5`, 1)
	// And attention wider than the hidden size, whose buffers share, and
	// narrower (the kept att's buffer is hidden-wide, for ln1).
	for _, js := range []string{five, strings.Replace(five, `"num_key_value_heads": 2,`, `"num_key_value_heads": 2, "head_dim": 32,`, 1),
		strings.Replace(five, `"num_key_value_heads": 2,`, `"num_key_value_heads": 2, "head_dim": 8,`, 1)} {
		c, err := engine.ParseConfig([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		checkSavingsSameGradients(t, c)
	}
}

func checkSavingsSameGradients(t *testing.T, c *engine.Config) {
	const T = 1024 // four loss chunks; the MLP's default chunk (2048 rows) leaves it whole on both sides
	bt := randomBatch(t, 1, T, c.VocabSize)
	grads := func(opt engine.Options) (float64, []float32) {
		dev := openCPU(t)
		m := engine.New(c, dev, opt)
		defer m.Close()
		m.InitRandom(7)
		if opt.LoRA != nil {
			a, err := engine.NewAdapter(c, dev, *opt.LoRA)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			engine.FillDevice(dev, a.Params, func(p []float32) error { // a nonzero B, so every adapter gradient flows
				for i := range p {
					p[i] = 0.02 * float32(i*7919%13-6) / 6
				}
				return nil
			})
			if err := m.Attach(a); err != nil {
				t.Fatal(err)
			}
			a.ZeroGrad()
			sum, _ := m.ForwardBackward(bt, 1/float32(bt.Scored()))
			return sum, append([]float32(nil), engine.HostView(dev, a.Grads)...)
		}
		m.ZeroGrad()
		sum, _ := m.ForwardBackward(bt, 1/float32(bt.Scored()))
		return sum, append([]float32(nil), engine.HostView(dev, m.Grads.Arena)...)
	}
	lora := &engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: engine.LoRATargets}
	for _, base := range []engine.Options{{}, {BF16: true}, {LoRA: lora, FrozenBF16: true}} {
		wantLoss, want := grads(base)
		// Recomputation, keeping the attention outputs, checkpoints (each
		// segment keeping its attention outputs).
		for _, saving := range []engine.Options{{Recompute: true}, {Recompute: true, KeepAttention: true}, {Recompute: true, CheckpointEvery: 2},
			{Recompute: true, KeepAttention: true, CheckpointEvery: 2}, {Recompute: true, KeepAttention: true, KeepAttentionLayers: 2},
			{Recompute: true, KeepAttention: true, KeepAttentionLayers: 1, CheckpointEvery: 2}} {
			opt := base
			opt.Recompute, opt.KeepAttention, opt.CheckpointEvery, opt.KeepAttentionLayers = saving.Recompute, saving.KeepAttention, saving.CheckpointEvery, saving.KeepAttentionLayers
			loss, got := grads(opt)
			if loss != wantLoss {
				t.Errorf("q dim %d, lora=%v, %+v: loss %v with the savings, %v without", c.QDim(), base.LoRA != nil, saving, loss, wantLoss)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("q dim %d, lora=%v, %+v: gradient %d = %v with the savings, %v without", c.QDim(), base.LoRA != nil, saving, i, got[i], want[i])
					break
				}
			}
		}
	}
}

// Evaluation and eval prompts at long context take no second full-size
// allocation: Evaluate on the training batch shape allocates nothing (it
// runs in the training buffers), and reading a prompt in chunks of 256
// grows memory by the prompt's key/value cache alone (prompts of T and 2T
// tokens differ by exactly the cache of T tokens: no buffer of the
// prompt's length besides it).
func TestEvalAtLongContextReusesBuffers(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	const T = 768
	dev := engine.NewCountingDevice(openCPU(t))
	m := engine.New(c, dev, engine.Options{Recompute: true, CheckpointEvery: 2})
	defer m.Close()
	m.InitRandom(1)
	bt := randomBatch(t, 1, T, c.VocabSize)
	m.ForwardBackward(bt, 1/float32(bt.Scored()))
	before := dev.Memory()
	m.Evaluate(bt)
	if after := dev.Memory(); after.Allocs != before.Allocs || after.Live != before.Live {
		t.Errorf("Evaluate allocated: %d allocations and %d bytes live before, %d and %d after", before.Allocs, before.Live, after.Allocs, after.Live)
	}
	grew := func(n int) int64 {
		d, err := m.NewDecoder(n)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		live := dev.Memory().Live
		for s := 0; s < n; s += 256 {
			ids := make([]int, min(256, n-s))
			for i := range ids {
				ids[i] = (s + i) % c.VocabSize
			}
			if _, err := d.Append(ids); err != nil {
				t.Fatal(err)
			}
		}
		return dev.Memory().Live - live
	}
	one, two := grew(T/2), grew(T)
	if two-one != c.KVCacheBytes(T/2) {
		t.Errorf("a prompt of %d tokens takes %d bytes more than one of %d; want only the cache of %d tokens, %d bytes", T, two-one, T/2, T/2, c.KVCacheBytes(T/2))
	}
}
