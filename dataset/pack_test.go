package dataset

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// chatLengths draws a chat-like length distribution: log-normal with a
// median of 350 tokens, a long tail, clipped to [16, ctxLen].
func chatLengths(n, ctxLen int) []int {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]int, n)
	for i := range out {
		l := int(math.Exp(math.Log(350) + 0.9*r.NormFloat64()))
		out[i] = min(max(l, 16), ctxLen)
	}
	return out
}

func TestPackEfficiency(t *testing.T) {
	const ctxLen = 2048
	for _, n := range []int{300, 5000} {
		lengths := chatLengths(n, ctxLen)
		rows := Pack(lengths, ctxLen)
		seen := make([]int, n)
		var used int
		for _, row := range rows {
			sum := 0
			for _, i := range row {
				seen[i]++
				sum += lengths[i]
			}
			if sum > ctxLen {
				t.Fatalf("row holds %d tokens > %d", sum, ctxLen)
			}
			used += sum
		}
		for i, c := range seen {
			if c != 1 {
				t.Fatalf("example %d placed %d times", i, c)
			}
		}
		eff := float64(used) / float64(len(rows)*ctxLen)
		sorted := slices.Clone(lengths)
		slices.Sort(sorted)
		t.Logf("n=%d examples (median %d, p99 %d tokens), context %d: %d rows, packing efficiency %.2f%% (lower bound on rows %d)",
			n, sorted[n/2], sorted[n*99/100], ctxLen, len(rows), 100*eff, (used+ctxLen-1)/ctxLen)
		if eff < 0.90 {
			t.Fatalf("packing efficiency %.3f < 0.90", eff)
		}
	}
}

func TestPackDeterministic(t *testing.T) {
	lengths := chatLengths(1000, 1024)
	a, b := Pack(lengths, 1024), Pack(lengths, 1024)
	if !slices.EqualFunc(a, b, slices.Equal) {
		t.Fatal("Pack is not deterministic")
	}
}

func TestEpochShuffle(t *testing.T) {
	const n = 500
	e0 := permutation(n, 42, epochStream)
	if !slices.Equal(e0, permutation(n, 42, epochStream)) {
		t.Fatal("same seed and epoch give different orders")
	}
	sorted := slices.Clone(e0)
	slices.Sort(sorted)
	for i, v := range sorted {
		if v != i {
			t.Fatal("not a permutation")
		}
	}
	if slices.Equal(e0, permutation(n, 42, epochStream+1)) || slices.Equal(e0, permutation(n, 43, epochStream)) {
		t.Fatal("different epochs or seeds give the same order")
	}
	identity := 0
	for i, v := range e0 {
		if i == v {
			identity++
		}
	}
	if identity > 20 {
		t.Fatalf("%d fixed points: not shuffled", identity)
	}
}

func TestSplitEval(t *testing.T) {
	tr, ev := splitEval(100, 0.1, 7)
	if len(ev) != 10 || len(tr) != 90 {
		t.Fatalf("split %d/%d", len(tr), len(ev))
	}
	all := slices.Concat(tr, ev)
	slices.Sort(all)
	for i, v := range all {
		if v != i {
			t.Fatal("train and eval overlap or miss items")
		}
	}
	tr2, ev2 := splitEval(100, 0.1, 7)
	if !slices.Equal(ev, ev2) || !slices.Equal(tr, tr2) {
		t.Fatal("split not deterministic")
	}
	if _, ev3 := splitEval(100, 0.1, 8); slices.Equal(ev, ev3) {
		t.Fatal("split ignores the seed")
	}
	if tr, ev := splitEval(3, 0.01, 1); len(ev) != 1 || len(tr) != 2 {
		t.Fatal("a positive fraction holds out at least one item")
	}
}
