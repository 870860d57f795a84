package engine_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"hone/engine"
	"hone/safetensors"
)

// A frozen bf16 base of a mixture of experts trains an expert, router or
// Wqkv adapter as BF16 mode does on the fp32 master weights: on a bf16
// checkpoint (the weights the same values) loss, logits and adapter
// gradients are equal bit for bit, one expert idle in a layer included.
// On the fp32 checkpoints both are held to the float64 PyTorch reference
// at the bf16 tolerance of TestLoRABF16AgainstReference, except
// mixtral_experts_rslora_empty, whose routing margins (1e-3 in the router
// logits) are below what rounding the embedding to bf16 moves (a frozen
// base holds it in bf16; BF16 mode reads it in fp32).
func TestFrozenBF16MoELoRAAgainstReference(t *testing.T) {
	const lossTol, tensorTol = 1e-2, 3e-2
	for _, devName := range parityDevices {
		for _, name := range []string{"mixtral_experts", "mixtral_experts_rslora_empty", "dbrx_qkv_clip"} {
			for _, opt := range []engine.Options{{FrozenBF16: true}, {FrozenBF16: true, Recompute: true, LossChunk: 5}} {
				t.Run(fmt.Sprintf("%s/%s/recompute=%v", devName, name, opt.Recompute), func(t *testing.T) {
					dev := openDevice(t, devName)
					mixedOpt := engine.Options{BF16: true, Recompute: opt.Recompute, LossChunk: opt.LossChunk}
					dir := filepath.Join("testdata", "lora", name)
					base16 := bf16Copy(t, dev, dir)
					frozen16, mixed16 := runLoRADir(t, dev, base16, dir, opt), runLoRADir(t, dev, base16, dir, mixedOpt)
					if frozen16.loss != mixed16.loss || !slices.Equal(frozen16.logits, mixed16.logits) || !slices.Equal(frozen16.grads, mixed16.grads) {
						t.Errorf("bf16 checkpoint: frozen bf16 base differs from BF16 mode (loss %v vs %v, logits %.3g, grads %.3g)",
							frozen16.loss, mixed16.loss, relErr(frozen16.logits, mixed16.logits), relErr(frozen16.grads, mixed16.grads))
					}
					checkAgainstFixture(t, name, runLoRA(t, dev, name, mixedOpt), lossTol, tensorTol)
					if name != "mixtral_experts_rslora_empty" {
						checkAgainstFixture(t, name, runLoRA(t, dev, name, opt), lossTol, tensorTol)
					}
				})
			}
		}
	}
}

// bf16Copy writes the model of dir as a bf16 checkpoint and returns its directory.
func bf16Copy(t *testing.T, dev engine.Device, dir string) string {
	t.Helper()
	m, err := engine.Load(dir, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := t.TempDir()
	if err := m.Save(out, engine.SaveOptions{DType: safetensors.BF16, SourceDir: dir}); err != nil {
		t.Fatal(err)
	}
	return out
}

// runLoRADir is runLoRA on the base in modelDir with the fixture dir's
// adapter and batch.
func runLoRADir(t *testing.T, dev engine.Device, modelDir, dir string, opt engine.Options) loraRun {
	t.Helper()
	m, err := engine.Load(modelDir, dev, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	a, err := engine.LoadAdapter(filepath.Join(dir, "adapter"), m)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := m.Attach(a); err != nil {
		t.Fatal(err)
	}
	bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
	logits := m.Logits(bt)
	a.ZeroGrad()
	sum, n := m.ForwardBackward(bt, 1/float32(bt.Scored()))
	return loraRun{sum / float64(n), logits, slices.Clone(engine.HostView(dev, a.Grads))}
}

const (
	memMixtralConfig = `{"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 512, "hidden_size": 64,
	"intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
	"num_local_experts": 4, "num_experts_per_tok": 2, "output_router_logits": true, "router_aux_loss_coef": 0.02,
	"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 2048}`
	memDBRXConfig = `{"architectures": ["DbrxForCausalLM"], "model_type": "dbrx", "d_model": 64, "n_heads": 4, "n_layers": 2,
	"max_seq_len": 2048, "vocab_size": 512, "output_router_logits": true,
	"attn_config": {"clip_qkv": 0.5, "kv_n_heads": 2}, "ffn_config": {"ffn_hidden_size": 96, "moe_num_experts": 4, "moe_top_k": 2}}`
)

// MemoryEstimate of LoRA on a mixture of experts (adapters on every
// expert, the router and Wqkv; frozen bf16 or fp32 base) is what training
// allocates through a counting device, to the byte.
func TestLoRAMemoryEstimateMoE(t *testing.T) {
	for _, tc := range []struct {
		config string
		lora   engine.LoRAConfig
		opt    engine.Options
		B, T   int
	}{
		{memMixtralConfig, engine.LoRAConfig{Rank: 4, Alpha: 8}, engine.Options{FrozenBF16: true}, 2, 48},
		{memMixtralConfig, engine.LoRAConfig{Rank: 8, Alpha: 8, Targets: []string{"gate", "w2"}}, engine.Options{FrozenBF16: true, Recompute: true, LossChunk: 32}, 3, 40},
		{memMixtralConfig, engine.LoRAConfig{Rank: 4, Alpha: 8}, engine.Options{}, 2, 48},
		{memDBRXConfig, engine.LoRAConfig{Rank: 4, Alpha: 8}, engine.Options{FrozenBF16: true}, 2, 48},
		{memDBRXConfig, engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"Wqkv", "out_proj", "layer"}}, engine.Options{BF16: true}, 2, 48},
	} {
		c, err := engine.ParseConfig([]byte(tc.config))
		if err != nil {
			t.Fatal(err)
		}
		tc.opt.LoRA = &tc.lora
		t.Run(fmt.Sprintf("%s/frozenbf16=%v/bf16=%v/%v", c.ModelType, tc.opt.FrozenBF16, tc.opt.BF16, tc.lora.Targets), func(t *testing.T) {
			dev := engine.NewCountingDevice(openCPU(t))
			m := engine.New(c, dev, tc.opt)
			m.InitRandom(1)
			a, err := engine.NewAdapter(c, dev, tc.lora)
			if err != nil {
				t.Fatal(err)
			}
			a.InitPEFT(2)
			if err := m.Attach(a); err != nil {
				t.Fatal(err)
			}
			mom, vel := dev.Alloc(len(a.Params)), dev.Alloc(len(a.Params))
			m.Reserve(tc.B, tc.T)
			bt := randomBatch(t, tc.B, tc.T, c.VocabSize)
			a.ZeroGrad()
			m.ForwardBackward(bt, 1/float32(bt.Scored()))
			dev.AdamW(a.Params, a.Grads, mom, vel, nil, engine.AdamWStep{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 1})
			actual := dev.Memory().Peak + engine.AttentionScratchFor(dev, tc.opt.BF16, tc.B, tc.T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
			if est := c.MemoryEstimate(dev, tc.opt, tc.B, tc.T); est != actual {
				t.Errorf("MemoryEstimate = %d bytes, training allocated %d (%+d)", est, actual, est-actual)
			}
		})
	}
}
