package engine_test

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
)

// MemoryEstimate of an NF4 base matches what New, the adapter and a
// training step allocate on the device plus the quantized matrices held
// on the host (NF4Bytes), in BF16 and fp32 modes, with double-quantized
// and fp32 scales.
func TestNF4MemoryEstimateMatchesAllocations(t *testing.T) {
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	lora := &engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: engine.LoRATargets}
	for _, opt := range []engine.Options{
		{QuantizeBase: "nf4", BF16: true, FrozenBF16: true, LoRA: lora},
		{QuantizeBase: "nf4", BF16: true, LoRA: lora, Recompute: true, NF4SingleScale: true},
		{QuantizeBase: "nf4", LoRA: lora},
		{QuantizeBase: "nf4", BF16: true, FrozenBF16: true, LoRA: lora, NF4Embeddings: true},
		{QuantizeBase: "nf4", LoRA: lora, NF4Embeddings: true, NF4HeadRows: 100},
	} {
		t.Run(fmt.Sprintf("bf16=%v/recompute=%v/single=%v/embeddings=%v", opt.BF16, opt.Recompute, opt.NF4SingleScale, opt.NF4Embeddings), func(t *testing.T) {
			dev := engine.NewCountingDevice(openCPU(t))
			m := engine.New(c, dev, opt)
			m.InitRandom(1)
			a, err := engine.NewAdapter(c, dev, *opt.LoRA)
			if err != nil {
				t.Fatal(err)
			}
			a.InitPEFT(2)
			if err := m.Attach(a); err != nil {
				t.Fatal(err)
			}
			mom, vel := dev.Alloc(len(a.Params)), dev.Alloc(len(a.Params))
			const B, T = 2, 64
			m.Reserve(B, T)
			bt := randomBatch(t, B, T, c.VocabSize)
			a.ZeroGrad()
			m.ForwardBackward(bt, 1/float32(bt.Scored()))
			dev.AdamW(a.Params, a.Grads, mom, vel, nil, engine.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 1})
			actual := dev.Memory().Peak + engine.AttentionScratchFor(dev, opt.BF16, B, T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim) + m.NF4Bytes()
			est := c.MemoryEstimate(dev, opt, B, T)
			if rel := float64(est-actual) / float64(actual); rel > 0.01 || rel < -0.01 {
				t.Errorf("MemoryEstimate = %d bytes, allocated %d (NF4 %d): off by %.2f%%", est, actual, m.NF4Bytes(), 100*rel)
			}
			// Half a byte a quantized weight, and the scales: 4 bytes per 64
			// (fp32) or about 1 (double-quantized).
			var q int64
			for _, s := range c.ParamSpecs() {
				if len(s.Shape) == 2 && (opt.NF4Embeddings || strings.HasPrefix(s.Name, "model.layers.")) {
					q += int64(s.Size())
				}
			}
			perBlock := 1.0 + 4.0/256
			if opt.NF4SingleScale {
				perBlock = 4
			}
			if got, want := float64(m.NF4Bytes()), float64(q)/2+float64(q)/64*perBlock; got < want || got > want*1.01 {
				t.Errorf("NF4Bytes = %.0f for %d quantized weights, want about %.0f", got, q, want)
			}
		})
	}
}

// In BF16 mode an NF4 base computes exactly what a frozen bf16 base of
// its dequantized weights does: the matrices it dequantizes per layer are
// those weights rounded to bf16, as loading them rounds them. With an
// adapter attached the two give bit-identical logits and adapter
// gradients, with and without recomputation.
func TestNF4BF16EqualsFrozenBF16OfDequantized(t *testing.T) {
	for _, emb := range []bool{false, true} {
		t.Run(fmt.Sprintf("embeddings=%v", emb), func(t *testing.T) { testNF4BF16EqualsFrozenBF16(t, emb) })
	}
}

// testNF4BF16EqualsFrozenBF16 is the test above, with the embeddings and
// head in NF4 too when emb (Options.NF4Embeddings).
func testNF4BF16EqualsFrozenBF16(t *testing.T, emb bool) {
	src := filepath.Join("testdata", "lora", "gqa_packed")
	dev := openCPU(t)
	q32, err := engine.Load(src, dev, engine.Options{QuantizeBase: "nf4", NF4Embeddings: emb})
	if err != nil {
		t.Fatal(err)
	}
	dir := writeDequantized(t, q32, src)
	for _, recompute := range []bool{false, true} {
		ref, err := engine.Load(dir, dev, engine.Options{FrozenBF16: true, Recompute: recompute})
		if err != nil {
			t.Fatal(err)
		}
		q, err := engine.Load(src, dev, engine.Options{QuantizeBase: "nf4", BF16: true, Recompute: recompute, NF4Embeddings: emb})
		if err != nil {
			t.Fatal(err)
		}
		var grads [2][]float32
		var logits [2][]float32
		for i, m := range []*engine.Model{ref, q} {
			a, err := engine.LoadAdapter(filepath.Join(src, "adapter"), m)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Attach(a); err != nil {
				t.Fatal(err)
			}
			bt := randomBatch(t, 2, 24, m.Config.VocabSize)
			logits[i] = m.Logits(bt)
			a.ZeroGrad()
			m.ForwardBackward(bt, 1/float32(bt.Scored()))
			grads[i] = append([]float32(nil), engine.HostView(dev, a.Grads)...)
		}
		for i := range logits[0] {
			if logits[0][i] != logits[1][i] {
				t.Fatalf("recompute=%v: logit %d: NF4 %v, frozen bf16 of the dequantized weights %v", recompute, i, logits[1][i], logits[0][i])
			}
		}
		for i := range grads[0] {
			if grads[0][i] != grads[1][i] {
				t.Fatalf("recompute=%v: adapter gradient %d: NF4 %v, frozen bf16 %v", recompute, i, grads[1][i], grads[0][i])
			}
		}
		ref.Close()
		q.Close()
	}
}

// An NF4 base cannot be saved or merged into (the base it came from can),
// and mixtures of experts are refused when loading.
func TestNF4Refusals(t *testing.T) {
	dev := openCPU(t)
	src := filepath.Join("testdata", "lora", "gqa_packed")
	m, err := engine.Load(src, dev, engine.Options{QuantizeBase: "nf4", BF16: true})
	if err != nil {
		t.Fatal(err)
	}
	a, err := engine.LoadAdapter(filepath.Join(src, "adapter"), m)
	if err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"Save":  m.Save(t.TempDir(), engine.SaveOptions{}),
		"Merge": m.Merge(a),
	} {
		if err == nil || !strings.Contains(err.Error(), "NF4") {
			t.Errorf("%s on an NF4 base: %v, want an error naming NF4", what, err)
		}
	}
	if _, err := engine.Load(filepath.Join("testdata", "parity", "mixtral"), dev, engine.Options{QuantizeBase: "nf4"}); err == nil || !strings.Contains(err.Error(), "mixture of experts") {
		t.Errorf("Load of Mixtral with an NF4 base: %v, want a refusal", err)
	}
	if _, err := engine.Load(src, dev, engine.Options{QuantizeBase: "int3"}); err == nil || !strings.Contains(err.Error(), "int3") {
		t.Errorf("Load with quantize_base int3: %v, want a refusal naming it", err)
	}
}

// The head of NF4 embeddings (Options.NF4Embeddings) computes in tiles of
// NF4HeadRows rows: any tile height gives the same logits and adapter
// gradients up to fp32 rounding. Here tiles of 10 rows (320 values, whole
// blocks, and fp32 scales, so the chunks quantize alike; the last tile
// short) against one tile of the whole vocabulary, with rows starting
// inside an NF4 block (hidden size 32).
func TestNF4HeadTilesAgree(t *testing.T) {
	src := filepath.Join("testdata", "lora", "gqa_packed")
	dev := openCPU(t)
	var logits, grads [2][]float32
	for i, rows := range []int{0, 10} {
		m, err := engine.Load(src, dev, engine.Options{QuantizeBase: "nf4", NF4SingleScale: true, NF4Embeddings: true, NF4HeadRows: rows})
		if err != nil {
			t.Fatal(err)
		}
		a, err := engine.LoadAdapter(filepath.Join(src, "adapter"), m)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Attach(a); err != nil {
			t.Fatal(err)
		}
		bt := randomBatch(t, 2, 24, m.Config.VocabSize)
		logits[i] = m.Logits(bt)
		a.ZeroGrad()
		m.ForwardBackward(bt, 1/float32(bt.Scored()))
		grads[i] = append([]float32(nil), engine.HostView(dev, a.Grads)...)
		m.Close()
	}
	for name, v := range map[string][2][]float32{"logit": logits, "adapter gradient": grads} {
		scale := 0.0
		for _, x := range v[0] {
			scale = max(scale, math.Abs(float64(x)))
		}
		for i := range v[0] {
			if d := math.Abs(float64(v[0][i] - v[1][i])); d > 1e-5*scale {
				t.Fatalf("%s %d: tiles of 10 rows %v, one tile %v", name, i, v[1][i], v[0][i])
			}
		}
	}
}
