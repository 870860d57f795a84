package train

import (
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/optim"
)

// A LionW run plans one moment per trained parameter, not AdamW's two: the
// plan matches what LionW training allocates on a counting device at its
// peak (1%, as for AdamW), and a full run's plan is AdamW's less exactly
// 4 bytes per parameter.
func TestLionWMemoryPlanMatchesAllocations(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512,
		"hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
		"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 2048}`))
	if err != nil {
		t.Fatal(err)
	}
	const B, T = 2, 96
	none := 0.0
	for _, method := range []string{"full", "lora"} {
		t.Run(method, func(t *testing.T) {
			dev := engine.NewCountingDevice(cpu.New(0))
			spec := Spec{Method: method, Optimizer: "lionw", BatchRows: B, Precision: "fp32"}
			if method == "lora" {
				spec.LoRA = &LoRASpec{Rank: 8, Alpha: 16, Dropout: &none, Targets: engine.LoRATargets}
			}
			opts, _, err := planOptions(spec, c, dev, T, 1<<50)
			if err != nil {
				t.Fatal(err)
			}
			if opts.OptimizerStates != 1 {
				t.Fatalf("planned options %+v: want one optimizer state", opts)
			}
			m := engine.New(c, dev, opts)
			m.InitRandom(1)
			var o optim.Optimizer
			var a *engine.Adapter
			if method == "lora" {
				if a, err = engine.NewAdapter(c, dev, *opts.LoRA); err != nil {
					t.Fatal(err)
				}
				a.InitPEFT(1)
				if err := m.Attach(a); err != nil {
					t.Fatal(err)
				}
				o, err = optim.NewLionWAdapter(a, optim.DefaultLionW, 1e-4)
			} else {
				o, err = optim.NewLionW(m, optim.DefaultLionW, 1e-4)
			}
			if err != nil {
				t.Fatal(err)
			}
			m.Reserve(B, T)
			bt, err := engine.NewBatch([][]int{make([]int, T), make([]int, T)}, [][]int{make([]int, T), make([]int, T)}, nil, c.VocabSize)
			if err != nil {
				t.Fatal(err)
			}
			if a != nil {
				a.ZeroGrad()
				m.ForwardBackward(bt, 1/float32(bt.Scored()))
				_, err = o.StepAdapter(a, 1e-4)
			} else {
				m.ZeroGrad()
				m.ForwardBackward(bt, 1/float32(bt.Scored()))
				_, err = o.Step(m, 1e-4)
			}
			if err != nil {
				t.Fatal(err)
			}
			actual := dev.Memory().Peak + engine.AttentionScratchFor(dev, opts.BF16, B, T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
			plan := c.MemoryEstimate(dev, opts, B, T)
			if rel := float64(plan-actual) / float64(actual); rel > 0.01 || rel < -0.01 {
				t.Errorf("LionW plan %d bytes, training allocated %d: off by %.2f%%", plan, actual, 100*rel)
			}
			adam := opts
			adam.OptimizerStates = 0
			trained := int64(len(m.Params.Arena))
			if a != nil {
				trained = int64(len(a.Params))
			}
			if got := c.MemoryEstimate(dev, adam, B, T) - plan; got != 4*trained {
				t.Errorf("AdamW plan - LionW plan = %d bytes, want one moment, %d", got, 4*trained)
			}
		})
	}
}
