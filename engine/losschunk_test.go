package engine_test

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"hone/engine"
)

// The loss chunk is a memory setting, not a numerical one: on the parity
// fixtures (a tied head, packed documents with unscored positions), fp32
// and bf16, every chunk size gives the loss and gradients of the whole
// batch in one chunk. Only the sums across chunks regroup: the loss adds
// the chunks' float64 sums (within N·2⁻⁵³ of the sum for N rows; measured
// 3e-16), and the head's weight gradient adds each chunk's fp32 product
// dlᵀ·x into the last (bound 1e-6 of its largest value, measured 1.9e-7);
// every other gradient is computed row by row and comes out bit for bit.
func TestLossChunkSameGradients(t *testing.T) {
	for _, name := range []string{"tied_llama3", "bias_packed"} {
		for _, base := range []engine.Options{{}, {BF16: true}} {
			var n int // rows
			pass := func(chunk int) (float64, []float32, *engine.Config) {
				opt := base
				opt.LossChunk = chunk
				dev := openCPU(t)
				dir := filepath.Join("testdata", "parity", name)
				m, err := engine.Load(dir, dev, opt)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
				m.ZeroGrad()
				sum, _ := m.ForwardBackward(bt, 1/float32(bt.Scored()))
				n = bt.B * bt.T
				return sum, slices.Clone(engine.HostView(dev, m.Grads.Arena)), m.Config
			}
			wantL, want, c := pass(1 << 20)
			for _, chunk := range []int{1, 3, 8} {
				t.Run(fmt.Sprintf("%s/bf16=%v/chunk%d", name, base.BF16, chunk), func(t *testing.T) {
					gotL, got, _ := pass(chunk)
					if math.Abs(gotL-wantL) > float64(n)*0x1p-53*math.Abs(wantL) {
						t.Errorf("loss sum %.17g, whole batch %.17g", gotL, wantL)
					}
					for _, s := range c.ParamSpecs() {
						g, w := got[s.Offset:s.Offset+s.Size()], want[s.Offset:s.Offset+s.Size()]
						head := s.Name == "lm_head.weight" || c.TieWordEmbeddings && s.Name == "model.embed_tokens.weight"
						if e := relErr(g, w); head && e > 1e-6 || !head && !slices.Equal(g, w) {
							t.Errorf("%s: relative error %.3g against the whole batch (head %v)", s.Name, e, head)
						}
					}
				})
			}
		}
	}
}

// At Llama 3's vocabulary, where the logits dominate the loss's memory,
// the plan holds loss chunks of 256 and 1024 rows (the default and the
// --loss-chunk A/B) to what training allocates, and each extra row of a
// chunk costs its fp32 logits and final norm output, and in bf16 the
// logits' bf16 gradient, which only the first bf16 scratch holds (the
// second holds the casts of weight gradients' inputs, at most (N,C) and
// the MLP's rows).
func TestLossChunkPlanLargeVocab(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
		"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
		"rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embeddings": 4096, "tie_word_embeddings": true}`))
	if err != nil {
		t.Fatal(err)
	}
	const B, T = 1, 2048
	V, C := int64(c.VocabSize), int64(c.HiddenSize)
	dev := openCPU(t)
	for _, bf16 := range []bool{false, true} {
		t.Run(fmt.Sprintf("bf16=%v", bf16), func(t *testing.T) {
			small, large := engine.Options{BF16: bf16}, engine.Options{BF16: bf16, LossChunk: 1024}
			if got := c.MemoryPlan(dev, small, B, T).Parts[engine.PartLogitsChunk]; got != 4*256*V {
				t.Errorf("default logits chunk %d bytes, want 256 rows' %d", got, 4*256*V)
			}
			checkPlanEqualsCounted(t, c, small, B, T)
			checkPlanEqualsCounted(t, c, large, B, T)
			want := 4 * 768 * (V + C) // the logits and the final norm's output
			if bf16 {
				want += 2 * 768 * V
			}
			if d := c.MemoryEstimate(dev, large, B, T) - c.MemoryEstimate(dev, small, B, T); d != want {
				t.Errorf("768 rows more cost %d bytes, want %d", d, want)
			}
		})
	}
}
