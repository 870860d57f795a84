package tokenizer

import (
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// allocated is the bytes f allocates (runtime.MemStats.TotalAlloc), the
// least of three tries so a stray background allocation does not count.
func allocated(f func()) uint64 {
	best := uint64(1 << 63)
	for range 2 {
		var a, b runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&a)
		f()
		runtime.ReadMemStats(&b)
		best = min(best, b.TotalAlloc-a.TotalAlloc)
	}
	return best
}

// hostileTexts are n-byte texts without word boundaries: the pathological
// records of issue 22.
func hostileTexts(n int) map[string]string {
	r := rand.New(rand.NewPCG(3, 4))
	letters := make([]byte, n)
	for i := range letters {
		letters[i] = 'a' + byte(r.IntN(26))
	}
	return map[string]string{
		"one letter":     strings.Repeat("a", n),
		"random letters": string(letters),
		"two letters":    strings.Repeat("ab", n/2),
		"punctuation":    strings.Repeat("!", n),
		"spaces":         strings.Repeat(" ", n),
		"Cyrillic":       strings.Repeat("ж", n/2),
	}
}

// TestHostileTextBoundedWork: a text that is one huge word is merged in
// pieces of bounded size (before the bound, one merge over the whole word
// held a heap entry per byte: ~10 GB for a 50 MB word), and encoding it
// allocates little beyond its ids, within a small factor of prose of the
// same size. Sizes and allocations, not time, so the test does not depend
// on the machine's speed.
func TestHostileTextBoundedWork(t *testing.T) {
	const n = 512 << 10
	for _, dir := range []string{llama3Dir, llama2Dir} {
		tok := loadAsset(t, dir)
		largest := 0
		tok.model.onMerge = func(symbols int) { largest = max(largest, symbols) }
		prose := benchProse(n)
		tok.Encode(prose, false) // warm the word cache, as a long run has it
		base := allocated(func() { tok.Encode(prose, false) })
		for name, text := range hostileTexts(n) {
			largest = 0
			var ids []int
			got := allocated(func() { ids = tok.Encode(text, false) })
			if largest > maxPieceBytes {
				t.Errorf("%s: %s: one merge over %d symbols, want at most %d", dir, name, largest, maxPieceBytes)
			}
			// The ids (8 bytes each, grown by doubling) and the merge
			// buffers of one piece, over what prose costs.
			if limit := 2*base + 3*8*uint64(len(ids)) + 64*maxPieceBytes; got > limit {
				t.Errorf("%s: encoding %d bytes of %s (%d ids) allocated %d MB, prose %d MB: want at most %d MB",
					dir, n, name, len(ids), got>>20, base>>20, limit>>20)
			}
		}
		tok.model.onMerge = nil
	}
}

// TestLongWordCutsExact: under a Metaspace tokenizer with no pre-tokenizer
// (Llama 2), a whole document reaches BPE as one word; cutting it before
// its word boundaries gives exactly the ids of merging it whole.
func TestLongWordCutsExact(t *testing.T) {
	tok := loadAsset(t, llama2Dir)
	if !tok.model.spaceCuts {
		t.Fatal("Llama 2's vocabulary has no token spanning a word boundary, so its long words should be cut exactly")
	}
	text := benchProse(3*maxPieceBytes) + " Ünïcödé 漢字 😀"
	ids := tok.Encode(text, false)
	norm := text
	for _, n := range tok.normalizers {
		norm = n(norm)
	}
	var want []int
	for _, id := range tok.model.mergeHeap(tok.model.initialSymbols(norm)) {
		want = append(want, int(id))
	}
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("cut encoding of %d bytes differs from the whole-word merge", len(norm))
	}
}

// TestMergeHeapLong checks the heap merge against the quadratic one on
// long words of several shapes.
func TestMergeHeapLong(t *testing.T) {
	for _, dir := range []string{llama3Dir, llama2Dir} {
		m := loadAsset(t, dir).model
		for name, w := range hostileTexts(3000) {
			if !m.byteLevel {
				w = strings.ReplaceAll(w, " ", spaceMark)
			}
			a := m.mergeShort(m.initialSymbols(w))
			b := m.mergeHeap(m.initialSymbols(w))
			if !reflect.DeepEqual(a, b) {
				t.Errorf("%s %s: short and heap merges differ", dir, name)
			}
		}
	}
}
