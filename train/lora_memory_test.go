package train

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/optim"
)

// A LoRA run plans its memory with the engine's estimate for the options
// planOptions chooses (a frozen base without gradients; bf16 only in bf16
// precision); that plan must match what LoRA training with those options
// allocates on a counting device at its peak (model, adapter, adapter
// optimizer, activations, dropout scratch; plus the host dropout mask and
// the attention scratch the device keeps). Tolerance 1%, as for full
// training. The plan is also below full fine-tuning's.
func TestLoRAMemoryPlanMatchesAllocations(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512,
		"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
		"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 2048}`))
	if err != nil {
		t.Fatal(err)
	}
	const B, T = 2, 96
	drop, none := 0.1, 0.0
	for _, tc := range []struct {
		precision string
		lo        LoRASpec
		frozen16  bool
	}{
		{"fp32", LoRASpec{Rank: 8, Alpha: 16, Dropout: &drop, Targets: engine.LoRATargets}, false},
		{"fp32", LoRASpec{Rank: 4, Alpha: 8, Dropout: &none, Targets: []string{"q_proj", "v_proj"}}, false},
		{"bf16", LoRASpec{Rank: 8, Alpha: 16, Dropout: &drop, Targets: engine.LoRATargets}, true},
		{"bf16", LoRASpec{Rank: 4, Alpha: 8, Dropout: &none, Targets: []string{"q_proj", "v_proj"}}, true},
	} {
		t.Run(fmt.Sprintf("%s/r%d-dropout%g", tc.precision, tc.lo.Rank, *tc.lo.Dropout), func(t *testing.T) {
			dev := engine.NewCountingDevice(cpu.New(0))
			spec := Spec{Method: "lora", LoRA: &tc.lo, Precision: tc.precision, BatchRows: B}
			opts, _, err := planOptions(spec, c, dev, T, 1<<50)
			if err != nil {
				t.Fatal(err)
			}
			if opts.LoRA == nil || opts.FrozenBF16 != tc.frozen16 {
				t.Fatalf("planned options %+v: want a LoRA plan, FrozenBF16 %v", opts, tc.frozen16)
			}
			m := engine.New(c, dev, opts)
			m.InitRandom(1)
			a, err := engine.NewAdapter(c, dev, *opts.LoRA)
			if err != nil {
				t.Fatal(err)
			}
			a.InitPEFT(1)
			if err := m.Attach(a); err != nil {
				t.Fatal(err)
			}
			o, err := optim.NewAdamWAdapter(a, optim.DefaultAdamW)
			if err != nil {
				t.Fatal(err)
			}
			m.Reserve(B, T)
			r := rand.New(rand.NewPCG(3, 4))
			ids, labels, segs := make([]int, T), make([]int, T), make([]int, T)
			for j := range ids {
				ids[j], labels[j], segs[j] = r.IntN(c.VocabSize), r.IntN(c.VocabSize), 1
			}
			bt, err := engine.NewBatch([][]int{ids, ids}, [][]int{labels, labels}, [][]int{segs, segs}, c.VocabSize)
			if err != nil {
				t.Fatal(err)
			}
			a.ZeroGrad()
			m.ForwardBackwardDropout(bt, 1/float32(bt.Scored()), 9)
			if _, err := o.StepAdapter(a, 1e-4); err != nil {
				t.Fatal(err)
			}
			var mask int64 // host memory: the dropout mask
			if *tc.lo.Dropout > 0 {
				mask = 4 * int64(B*T) * int64(max(c.HiddenSize, c.IntermediateSize, c.QDim()))
			}
			scratch := engine.AttentionScratchFor(dev, opts.BF16, B, T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
			actual := dev.Memory().Peak + mask + scratch
			plan := c.MemoryEstimate(dev, opts, B, T)
			if rel := float64(plan-actual) / float64(actual); rel > 0.01 || rel < -0.01 {
				t.Errorf("LoRA plan %d bytes, training allocated %d: off by %.2f%%", plan, actual, 100*rel)
			}
			full := engine.Options{BF16: opts.BF16}
			if f := c.MemoryEstimate(dev, full, B, T); plan >= f {
				t.Errorf("LoRA plan %d bytes is not below full fine-tuning's %d", plan, f)
			}
		})
	}
}
