package engine_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"hone/engine"
	"hone/optim"
)

// memTestConfig is small enough to train in a test, with biases so every
// buffer kind exists, and enough positions for attention's blocked path.
const memTestConfig = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512, "hidden_size": 64,
	"intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
	"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 2048, "attention_bias": true, "mlp_bias": true}`

// The memory estimate that Fit plans with must match what training really
// allocates: every buffer the model and the optimizer take through a
// counting device at their peak, plus the attention scratch the device
// states it keeps (checked against the CPU device's own buffers in
// engine/cpu). Stated tolerance: 1% (the estimate is meant to be exact;
// exact today; the slack is for a future per-call temporary).
func TestMemoryEstimateMatchesAllocations(t *testing.T) {
	const tol = 0.01
	c, err := engine.ParseConfig([]byte(memTestConfig))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opt  engine.Options
		B, T int
	}{
		{engine.Options{}, 2, 96},
		{engine.Options{Recompute: true, LossChunk: 64}, 3, 80},
		{engine.Options{BF16: true}, 2, 96},
		{engine.Options{BF16: true, CompactBF16: true, Recompute: true}, 2, 96},
		{engine.Options{Recompute: true}, 1, 1536}, // 4·T² > 8M scores: blocked attention
		{engine.Options{Recompute: true, KeepAttention: true}, 1, 1536},
	} {
		t.Run(fmt.Sprintf("%+v/B%dT%d", tc.opt, tc.B, tc.T), func(t *testing.T) {
			dev := engine.NewCountingDevice(openCPU(t))
			m := engine.New(c, dev, tc.opt)
			m.InitRandom(1)
			o, err := optim.NewAdamW(m, optim.DefaultAdamW)
			if err != nil {
				t.Fatal(err)
			}
			m.Reserve(tc.B, tc.T)
			bt := randomBatch(t, tc.B, tc.T, c.VocabSize)
			m.ZeroGrad()
			m.ForwardBackward(bt, 1/float32(bt.Scored()))
			if _, err := o.Step(m, 1e-4); err != nil {
				t.Fatal(err)
			}
			scratch := engine.AttentionScratchFor(dev, tc.opt.BF16, tc.B, tc.T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
			actual := dev.Memory().Peak + scratch
			est := c.MemoryEstimate(dev, tc.opt, tc.B, tc.T)
			t.Logf("estimate %d bytes, allocated %d", est, actual)
			if rel := float64(est-actual) / float64(actual); rel > tol || rel < -tol {
				t.Errorf("MemoryEstimate = %d bytes, training allocated %d (peak %d + attention scratch %d): off by %.2f%%, tolerance %g%%",
					est, actual, dev.Memory().Peak, scratch, 100*rel, 100*tol)
			}
			// Close gives back everything but the optimizer's moments.
			m.Close()
			if got, want := dev.Memory().Live, 2*4*c.NumParams(); got != want {
				t.Errorf("after Close %d bytes are live, want the AdamW moments' %d", got, want)
			}
		})
	}
}

func randomBatch(t testing.TB, B, T, vocab int) *engine.Batch {
	r := rand.New(rand.NewPCG(3, 4))
	ids := make([][]int, B)
	for i := range ids {
		ids[i] = make([]int, T)
		for j := range ids[i] {
			ids[i][j] = r.IntN(vocab)
		}
	}
	bt, err := engine.NewBatch(ids, ids, nil, vocab)
	if err != nil {
		t.Fatal(err)
	}
	return bt
}

// A Mixtral or DBRX config's estimate is exact too: expert activations are sized
// by the routed pairs (N·K rows), not by every expert.
// DBRX's clip_qkv backward recomputes into scratch and allocates nothing.
func TestMemoryEstimateMoE(t *testing.T) {
	for _, js := range []string{`{"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 256,
	"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
	"num_local_experts": 6, "num_experts_per_tok": 2, "output_router_logits": true, "max_position_embeddings": 512}`,
		`{"model_type": "dbrx", "d_model": 48, "n_heads": 4, "n_layers": 2, "max_seq_len": 512, "vocab_size": 256,
	"attn_config": {"clip_qkv": 0.05, "kv_n_heads": 2}, "ffn_config": {"ffn_hidden_size": 96, "moe_num_experts": 6, "moe_top_k": 2},
	"output_router_logits": true}`} {
		c, err := engine.ParseConfig([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		checkMoEMemory(t, c)
	}
}

func checkMoEMemory(t *testing.T, c *engine.Config) {
	for _, opt := range []engine.Options{{}, {Recompute: true, LossChunk: 32}, {BF16: true}, {BF16: true, CompactBF16: true, Recompute: true},
		{Recompute: true, KeepAttention: true}, {BF16: true, Recompute: true, KeepAttention: true, CheckpointEvery: 2}} {
		t.Run(fmt.Sprintf("%s/%+v", c.ModelType, opt), func(t *testing.T) {
			const B, T = 2, 64
			dev := engine.NewCountingDevice(openCPU(t))
			m := engine.New(c, dev, opt)
			defer m.Close()
			m.InitRandom(1)
			o, err := optim.NewAdamW(m, optim.DefaultAdamW)
			if err != nil {
				t.Fatal(err)
			}
			bt := randomBatch(t, B, T, c.VocabSize)
			m.ZeroGrad()
			m.ForwardBackward(bt, 1/float32(bt.Scored()))
			if _, err := o.Step(m, 1e-4); err != nil {
				t.Fatal(err)
			}
			actual := dev.Memory().Peak + engine.AttentionScratchFor(dev, opt.BF16, B, T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
			if est := c.MemoryEstimate(dev, opt, B, T); est != actual {
				t.Errorf("MemoryEstimate = %d bytes, training allocated %d", est, actual)
			}
			// Dense experts would hold E/K times the expert activations.
			dense := *c
			dense.NumExpertsPerTok = dense.NumLocalExperts
			if est, all := c.MemoryEstimate(dev, opt, B, T), dense.MemoryEstimate(dev, opt, B, T); all <= est {
				t.Errorf("estimate with every expert %d is not above the routed estimate %d", all, est)
			}
		})
	}
}
