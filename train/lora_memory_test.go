package train

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/optim"
)

// A LoRA run plans with the full fine-tuning estimate less
// loraMemoryCredit; that plan must match what LoRA training allocates on a
// counting device at its peak (model, adapter, adapter optimizer,
// activations, dropout scratch; plus the host dropout mask and the
// attention scratch the device keeps). Tolerance 1%, as for full training.
func TestLoRAMemoryPlanMatchesAllocations(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512,
		"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
		"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 2048}`))
	if err != nil {
		t.Fatal(err)
	}
	const B, T = 2, 96
	for _, lc := range []engine.LoRAConfig{
		{Rank: 8, Alpha: 16, Dropout: 0.1, Targets: engine.LoRATargets},
		{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj"}},
	} {
		t.Run(fmt.Sprintf("r%d-dropout%g", lc.Rank, lc.Dropout), func(t *testing.T) {
			dev := engine.NewCountingDevice(cpu.New(0))
			m := engine.New(c, dev, engine.Options{})
			m.InitRandom(1)
			a, err := engine.NewAdapter(c, dev, lc)
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
			credit, err := loraMemoryCredit(c, lc, B*T)
			if err != nil {
				t.Fatal(err)
			}
			var mask int64
			if lc.Dropout > 0 {
				mask = 4 * int64(B*T) * int64(max(c.HiddenSize, c.IntermediateSize, c.QDim()))
			}
			scratch := dev.AttentionScratch(B, T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
			actual := dev.Memory().Peak + mask + scratch
			plan := c.MemoryEstimate(dev, engine.Options{}, B, T) - credit
			if rel := float64(plan-actual) / float64(actual); rel > 0.01 || rel < -0.01 {
				t.Errorf("LoRA plan %d bytes, training allocated %d: off by %.2f%%", plan, actual, 100*rel)
			}
			if full := c.MemoryEstimate(dev, engine.Options{}, B, T); plan >= full {
				t.Errorf("LoRA plan %d bytes is not below full fine-tuning's %d", plan, full)
			}
		})
	}
}
