package generate

import (
	"math"
	"math/rand/v2"
	"testing"
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
