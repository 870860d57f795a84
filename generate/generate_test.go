package generate

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
)

// With top-k 2 only the two likeliest tokens are ever drawn, in proportion
// to their probabilities; top-p 0.5 on a dominant token makes sampling
// greedy; temperature 0 is the arg-max.
func TestSample(t *testing.T) {
	logits := []float32{0, float32(math.Log(3)), -1, float32(math.Log(1)) + 0.0, -5}
	r := rand.New(rand.NewPCG(1, 2))
	counts := map[int]int{}
	const n = 20000
	for i := 0; i < n; i++ {
		counts[Sample(logits, Params{Temperature: 1, TopK: 2}, r)]++
	}
	if len(counts) != 2 || counts[1] == 0 {
		t.Fatalf("top-k 2 drew %v, want ids 1 and one of the ties at logit 0", counts)
	}
	// id 1 has probability 3/4 among the two kept.
	if p := float64(counts[1]) / n; math.Abs(p-0.75) > 0.02 {
		t.Errorf("top-k 2: P(id 1) = %.3f, want 0.75", p)
	}
	for i := 0; i < 100; i++ {
		if got := Sample(logits, Params{Temperature: 1, TopP: 0.5}, r); got != 1 {
			t.Fatalf("top-p 0.5 drew %d, want always 1 (it alone holds half the mass)", got)
		}
	}
	if got := Sample(logits, Params{}, r); got != 1 {
		t.Errorf("greedy = %d, want 1", got)
	}
	// Same seed, same draws.
	a, b := rand.New(rand.NewPCG(9, 9)), rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 50; i++ {
		if Sample(logits, Params{Temperature: 0.7, TopK: 4, TopP: 0.9}, a) != Sample(logits, Params{Temperature: 0.7, TopK: 4, TopP: 0.9}, b) {
			t.Fatal("sampling is not deterministic for a seed")
		}
	}
}

func TestCompleteBudgetAndStop(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{"vocab_size": 16, "hidden_size": 16, "intermediate_size": 32,
		"num_hidden_layers": 1, "num_attention_heads": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 12}`))
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(c, cpu.New(1), engine.Options{})
	m.InitRandom(1)
	ctx := context.Background()
	out, err := Complete(ctx, m, []int{1, 2, 3}, Params{MaxNewTokens: 4})
	if err != nil || len(out) != 4 {
		t.Fatalf("Complete with a budget of 4 = %v, %v", out, err)
	}
	// Greedy decoding is deterministic: stopping at its second token ends there.
	stop, err := Complete(ctx, m, []int{1, 2, 3}, Params{MaxNewTokens: 4, StopIDs: []int{out[1]}})
	if err != nil || len(stop) > 2 || stop[len(stop)-1] != out[1] {
		t.Fatalf("Complete stopping at %d = %v, %v (unstopped %v)", out[1], stop, err, out)
	}
	// The context window (12) bounds the completion.
	long, err := Complete(ctx, m, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, Params{MaxNewTokens: 50})
	if err != nil || len(long) != 2 {
		t.Fatalf("Complete near max_position_embeddings = %v, %v", long, err)
	}
}

// A prompt run through the model in chunks leaves the same cache as one
// run: the sampled tokens agree with Stream's, and each chunked step
// before the last piece of the prompt samples nothing.
func TestSequenceChunkedPrefill(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{"vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
		"num_hidden_layers": 2, "num_attention_heads": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 40}`))
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(c, cpu.New(1), engine.Options{})
	m.InitRandom(3)
	prompt := []int{1, 5, 9, 2, 7, 3, 8, 4, 6, 11, 13}
	p := Params{MaxNewTokens: 6, Temperature: 0.8, Seed: 4}
	want, err := Complete(context.Background(), m, prompt, p)
	if err != nil || len(want) != 6 {
		t.Fatalf("Complete = %v, %v", want, err)
	}
	seq, err := NewSequence(m, prompt, p, 4)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	steps := 0
	for !seq.Done() {
		id, ok, err := seq.Step()
		if err != nil {
			t.Fatal(err)
		}
		if steps++; ok {
			got = append(got, id)
		} else if len(got) > 0 {
			t.Fatalf("step %d sampled nothing after the prompt was in", steps)
		}
	}
	// 11 prompt tokens in chunks of 4 take 3 steps, the third samples.
	if !slices.Equal(got, want) || steps != 2+len(want) {
		t.Errorf("chunked sequence = %v in %d steps, want %v in %d", got, steps, want, 2+len(want))
	}
}

// Sequences stepped together sample what each samples alone (greedy and
// seeded), finishing at different lengths as their budgets run out.
func TestStepBatchMatchesAlone(t *testing.T) {
	c, err := engine.ParseConfig([]byte(`{"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
		"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 64}`))
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(c, cpu.New(1), engine.Options{})
	m.InitRandom(5)
	prompts := [][]int{{1, 2, 3}, {9, 8, 7, 6, 5, 4, 3, 2, 1}, {42}}
	params := []Params{{MaxNewTokens: 20}, {MaxNewTokens: 7, Temperature: 0.9, Seed: 3}, {MaxNewTokens: 12}}
	var want [][]int
	seqs := make([]*Sequence, len(prompts))
	got := make([][]int, len(prompts))
	for i, pr := range prompts {
		w, err := Complete(context.Background(), m, pr, params[i])
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, w)
		if seqs[i], err = NewSequence(m, pr, params[i], 0); err != nil {
			t.Fatal(err)
		}
		id, _, err := seqs[i].Step()
		if err != nil {
			t.Fatal(err)
		}
		got[i] = append(got[i], id)
	}
	for {
		var run []*Sequence
		var idx []int
		for i, s := range seqs {
			if !s.Done() {
				run, idx = append(run, s), append(idx, i)
			}
		}
		if len(run) == 0 {
			break
		}
		ids, err := StepBatch(run)
		if err != nil {
			t.Fatal(err)
		}
		for j, id := range ids {
			got[idx[j]] = append(got[idx[j]], id)
		}
	}
	for i := range seqs {
		seqs[i].Close()
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("sequence %d stepped in a batch = %v, alone %v", i, got[i], want[i])
		}
	}
}
