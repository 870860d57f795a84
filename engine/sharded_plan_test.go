package engine

import (
	"fmt"
	"testing"
)

// A sharded pass's plan gives consecutive gathers different buffers
// wherever two buffers allow it, so each can be prefetched: with an odd
// number of layers always; with an even number the forward pass shares
// only after the embedding lookup and the backward pass once. The
// embeddings and the head go to the large buffer.
func TestShardPlanAlternates(t *testing.T) {
	for _, L := range []int{1, 2, 3, 4, 5} {
		for _, opt := range []Options{{}, {Recompute: true}, {Recompute: true, CheckpointEvery: 2}} {
			t.Run(fmt.Sprintf("%d-layers/checkpoint-every-%d", L, opt.CheckpointEvery), func(t *testing.T) {
				c, err := ParseConfig([]byte(fmt.Sprintf(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64,
					"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": %d, "num_attention_heads": 2,
					"num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 64}`, L)))
				if err != nil {
					t.Fatal(err)
				}
				m := &Model{Config: c, Opt: opt}
				for _, grad := range []bool{false, true} {
					m.planShardPass(grad)
					shared := 0
					for i, st := range m.shard.plan {
						if st.part >= L && st.buf != 0 {
							t.Errorf("grad %v: step %d: part %d in buffer %d", grad, i, st.part, st.buf)
						}
						afterEmbed := i > 0 && m.shard.plan[i-1].part == c.PartEmbed() && m.shard.plan[i-1].use == UseParams
						if i > 0 && st.buf == m.shard.plan[i-1].buf && !afterEmbed {
							shared++
						}
					}
					want := 0
					if grad && L%2 == 0 && opt.CheckpointEvery == 0 {
						want = 1
					}
					if grad && opt.CheckpointEvery > 0 {
						want = shared // segments reorder the layers; checked: at most one a segment
						if segs := (L + 1) / 2; shared > segs {
							t.Errorf("grad %v: %d gathers share their predecessor's buffer, want ≤ %d", grad, shared, segs)
						}
					}
					if shared != want {
						t.Errorf("grad %v: %d gathers share their predecessor's buffer, want %d (plan %v)", grad, shared, want, m.shard.plan)
					}
					// The next pass's embeddings are offered once the last
					// gather of parameters is done with buffer 0: at once
					// when it runs in the layer buffer.
					last := -1
					for i, st := range m.shard.plan {
						if grad && st.use&UseParams != 0 {
							last = i
						}
					}
					_, segments := m.Opt.residualPlan(c)
					if m.shard.last != last || (grad && (L%2 == 1 || segments) && m.shard.plan[last].buf != 1) {
						t.Errorf("grad %v: last gather of parameters %d, want %d, in the layer buffer with %d layers, segments %v (plan %v)",
							grad, m.shard.last, last, L, segments, m.shard.plan)
					}
				}
			})
		}
	}
}
