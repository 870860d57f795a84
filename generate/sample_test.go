package generate

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

// sampleSorted is the sampling Sample replaced, kept as its reference: sort
// the whole vocabulary, cut to top-k, then to the top-p nucleus, and walk
// the kept tokens in sorted order.
func sampleSorted(logits []float32, p Params, r *rand.Rand) int {
	type cand struct {
		id int
		l  float64
	}
	c := make([]cand, len(logits))
	for i, v := range logits {
		c[i] = cand{i, float64(v) / p.Temperature}
	}
	slices.SortFunc(c, func(a, b cand) int {
		if a.l != b.l {
			if a.l > b.l {
				return -1
			}
			return 1
		}
		return a.id - b.id
	})
	if p.TopK > 0 && p.TopK < len(c) {
		c = c[:p.TopK]
	}
	probs := make([]float64, len(c))
	var sum float64
	for i := range c {
		probs[i] = math.Exp(c[i].l - c[0].l)
		sum += probs[i]
	}
	keep := len(c)
	if p.TopP > 0 && p.TopP < 1 {
		var cum float64
		for i := range probs {
			cum += probs[i] / sum
			if cum >= p.TopP {
				keep = i + 1
				break
			}
		}
	}
	var total float64
	for _, q := range probs[:keep] {
		total += q
	}
	u := r.Float64() * total
	for i, q := range probs[:keep] {
		u -= q
		if u < 0 {
			return c[i].id
		}
	}
	return c[keep-1].id
}

// randomLogits are n logits spread like a model's (normal, scaled), with
// some exact ties.
func randomLogits(r *rand.Rand, n int, scale float64) []float32 {
	l := make([]float32, n)
	for i := range l {
		l[i] = float32(r.NormFloat64() * scale)
		if i > 0 && r.IntN(10) == 0 {
			l[i] = l[r.IntN(i)]
		}
	}
	return l
}

// TestSampleMatchesSort: with top-k and/or top-p, Sample draws exactly the
// token the full sort draws from the same random state, on random logits
// of many shapes, ties included.
func TestSampleMatchesSort(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 300; trial++ {
		n := 1 + r.IntN(3000)
		logits := randomLogits(r, n, []float64{0.01, 1, 3, 10}[trial%4])
		p := Params{Temperature: []float64{0.3, 0.7, 1, 1.5, 2}[trial%5]}
		switch trial % 3 {
		case 0:
			p.TopK = 1 + r.IntN(100)
		case 1:
			p.TopP = 0.05 + 0.9*r.Float64()
		case 2:
			p.TopK, p.TopP = 1+r.IntN(2*n), 0.05+0.95*r.Float64()
		}
		if (p.TopK == 0 || p.TopK >= n) && p.TopP == 0 {
			continue // no filter: drawn in id order (TestSampleDistribution)
		}
		seed := r.Uint64()
		a, b := rand.New(rand.NewPCG(seed, 1)), rand.New(rand.NewPCG(seed, 1))
		for i := 0; i < 20; i++ {
			if got, want := Sample(logits, p, a), sampleSorted(logits, p, b); got != want {
				t.Fatalf("trial %d (%d logits, %+v) draw %d: Sample = %d, the full sort = %d", trial, n, p, i, got, want)
			}
		}
	}
}

// TestSampleDistribution: without top-k or top-p, Sample draws over the
// vocabulary in id order rather than in sorted order: a different token
// for a given random number, the same probability for each token as the
// full sort, checked against the exact softmax with a chi-square test.
func TestSampleDistribution(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for trial := 0; trial < 4; trial++ {
		logits := randomLogits(r, 12, 1.5)
		p := Params{Temperature: 0.9}
		want := make([]float64, len(logits))
		var sum float64
		for i, v := range logits {
			want[i] = math.Exp(float64(v) / p.Temperature)
			sum += want[i]
		}
		const draws = 40000
		for name, sample := range map[string]func([]float32, Params, *rand.Rand) int{"Sample": Sample, "full sort": sampleSorted} {
			counts := make([]int, len(logits))
			for range draws {
				counts[sample(logits, p, r)]++
			}
			var chi2 float64
			for i, c := range counts {
				e := draws * want[i] / sum
				chi2 += (float64(c) - e) * (float64(c) - e) / e
			}
			// 11 degrees of freedom: P(chi2 > 35) < 0.0003.
			if chi2 > 35 {
				t.Errorf("trial %d: %s drew %v, chi-square %.1f against the softmax %v", trial, name, counts, chi2, want)
			}
		}
	}
}

// nucleusSize is how many tokens top-k and top-p keep, by the full sort.
func nucleusSize(logits []float32, p Params) int {
	l := make([]float64, len(logits))
	for i, v := range logits {
		l[i] = float64(v) / p.Temperature
	}
	slices.SortFunc(l, func(a, b float64) int { return -cmpFloat(a, b) })
	if p.TopK > 0 && p.TopK < len(l) {
		l = l[:p.TopK]
	}
	if p.TopP == 0 {
		return len(l)
	}
	var sum, cum float64
	for _, v := range l {
		sum += math.Exp(v - l[0])
	}
	for i, v := range l {
		if cum += math.Exp(v-l[0]) / sum; cum >= p.TopP {
			return i + 1
		}
	}
	return len(l)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestSampleNoFullSort: sampling a 128256-token vocabulary allocates
// (next to) nothing without top-k and top-p, and with them in proportion to the
// tokens they keep, not to the vocabulary (the full sort allocated 24 bytes
// a token for every draw).
func TestSampleNoFullSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	const vocab = 128256
	logits := randomLogits(r, vocab, 4)
	for _, p := range []Params{{Temperature: 0.9}, {Temperature: 0.9, TopK: 50}, {Temperature: 0.9, TopP: 0.9}, {Temperature: 1, TopK: 50, TopP: 0.95}} {
		Sample(logits, p, r) // fills the pooled buffer
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		const draws = 40
		for range draws {
			Sample(logits, p, r)
		}
		runtime.ReadMemStats(&b)
		per := (b.TotalAlloc - a.TotalAlloc) / draws
		limit := uint64(8 * vocab / 10) // a pooled buffer refilled after a GC now and then
		if p.TopK > 0 || p.TopP > 0 {
			kept := nucleusSize(logits, p)
			limit = uint64(16*24*max(kept, 64)) + 16<<10
			if limit > vocab*24/4 {
				t.Fatalf("%+v keeps %d tokens: make the test's logits more peaked", p, kept)
			}
		}
		if per > limit {
			t.Errorf("%+v: %d bytes allocated a draw, want at most %d (a full sort: %d)", p, per, limit, vocab*24)
		}
	}
}
