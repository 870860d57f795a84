package tokenizer

import (
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// mergeInfo is the result of merging an adjacent pair of symbols: the merge's
// rank (its line in the merges list; lower merges first) and the merged id.
type mergeInfo struct {
	rank int32
	id   int32
}

// bpe is the BPE model. Merges are applied on ids rather than strings, as HF
// tokenizers does, so that a merge costs one map lookup on an integer key.
type bpe struct {
	vocab        map[string]int // model vocabulary only (no added tokens)
	merges       map[uint64]mergeInfo
	unk          int // -1 when the model has no unk_token
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool

	// byteLevel is set when a ByteLevel pre-tokenizer maps each byte of a
	// word to a printable rune before the model sees it. The model then
	// works on raw bytes directly: byteIDs[b] is the id of the mapped rune
	// (-1 if absent), which avoids building the mapped string at all.
	byteLevel bool
	byteIDs   [256]int32
	// fallbackIDs[b] is the id of the "<0xNN>" token (-1 if absent).
	fallbackIDs [256]int32

	// spaceCuts: a long word may be cut before a SentencePiece word
	// boundary without changing its ids (see initCuts).
	spaceCuts bool

	cache   wordCache
	noCache bool // benchmarks only: measure the merge itself
	// onMerge, tests only, sees the symbol count of each heap merge.
	onMerge func(symbols int)
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// init fills the byte tables once vocab and byteLevel are known.
func (m *bpe) init() {
	for b := 0; b < 256; b++ {
		m.byteIDs[b], m.fallbackIDs[b] = -1, -1
		if id, ok := m.vocab[string(byteToRune[b])]; ok {
			m.byteIDs[b] = int32(id)
		}
		if id, ok := m.vocab[byteToken(byte(b))]; ok {
			m.fallbackIDs[b] = int32(id)
		}
	}
	m.cache.init()
	m.initCuts()
}

// byteToken is the SentencePiece byte-fallback token for b, e.g. "<0x0A>".
func byteToken(b byte) string {
	const hex = "0123456789ABCDEF"
	return "<0x" + string([]byte{hex[b>>4], hex[b&15]}) + ">"
}

// parseByteToken reports the byte of a "<0xNN>" token.
func parseByteToken(tok string) (byte, bool) {
	if len(tok) != 6 || !strings.HasPrefix(tok, "<0x") || tok[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(tok[3:5], 16, 8)
	return byte(v), err == nil
}

// appendWord appends the ids of one pre-tokenized word to dst.
func (m *bpe) appendWord(dst []int, word string) []int {
	if len(word) > maxPieceBytes {
		return m.appendLongWord(dst, word)
	}
	if m.noCache {
		for _, id := range m.encodeWord(word) {
			dst = append(dst, int(id))
		}
		return dst
	}
	if ids, ok := m.cache.get(word); ok {
		for _, id := range ids {
			dst = append(dst, int(id))
		}
		return dst
	}
	ids := m.encodeWord(word)
	m.cache.put(word, ids)
	for _, id := range ids {
		dst = append(dst, int(id))
	}
	return dst
}

// encodeWord runs BPE on one word, uncached.
func (m *bpe) encodeWord(word string) []int32 { return m.encodeWordIn(word, nil) }

// encodeWordIn is encodeWord working in sc's buffers when sc is not nil;
// the ids it returns are then valid until sc's next use.
func (m *bpe) encodeWordIn(word string, sc *mergeScratch) []int32 {
	if m.ignoreMerges {
		// ignore_merges: a word that is itself a vocabulary entry is
		// emitted whole, even if the merges would split it differently.
		key := word
		if m.byteLevel {
			key = byteLevelString(word)
		}
		if id, ok := m.vocab[key]; ok {
			return []int32{int32(id)}
		}
	}
	var buf []int32
	if sc != nil {
		buf = sc.syms[:0]
	}
	syms := m.initialSymbolsTo(buf, word)
	if sc != nil {
		sc.syms = syms
	}
	if len(syms) <= shortWord {
		return m.mergeShort(syms)
	}
	return m.mergeHeapIn(syms, sc)
}

// initialSymbols splits the word into its starting symbols: one per byte for
// byte-level models, else one per character with byte fallback or unk for
// characters missing from the vocabulary.
func (m *bpe) initialSymbols(word string) []int32 { return m.initialSymbolsTo(nil, word) }

// initialSymbolsTo is initialSymbols appending to syms.
func (m *bpe) initialSymbolsTo(syms []int32, word string) []int32 {
	if syms == nil {
		syms = make([]int32, 0, len(word))
	}
	if m.byteLevel {
		for i := 0; i < len(word); i++ {
			if id := m.byteIDs[word[i]]; id >= 0 {
				syms = append(syms, id)
			} else if m.unk >= 0 {
				syms = m.addUnk(syms)
			}
		}
		return syms
	}
	pendingUnk := false
	for i := 0; i < len(word); {
		_, size := utf8.DecodeRuneInString(word[i:])
		ch := word[i : i+size]
		i += size
		if id, ok := m.vocab[ch]; ok {
			pendingUnk = false
			syms = append(syms, int32(id))
			continue
		}
		if m.byteFallback && m.hasFallback(ch) {
			pendingUnk = false
			for j := 0; j < len(ch); j++ {
				syms = append(syms, m.fallbackIDs[ch[j]])
			}
			continue
		}
		if m.unk < 0 {
			continue // HF drops characters it cannot represent when there is no unk.
		}
		if pendingUnk && m.fuseUnk {
			continue // fuse_unk: a run of unknown characters becomes one unk.
		}
		syms = append(syms, int32(m.unk))
		pendingUnk = true
	}
	return syms
}

func (m *bpe) addUnk(syms []int32) []int32 {
	if m.fuseUnk && len(syms) > 0 && syms[len(syms)-1] == int32(m.unk) {
		return syms
	}
	return append(syms, int32(m.unk))
}

func (m *bpe) hasFallback(ch string) bool {
	for j := 0; j < len(ch); j++ {
		if m.fallbackIDs[ch[j]] < 0 {
			return false
		}
	}
	return true
}

// shortWord is the symbol count up to which the quadratic merge loop beats
// the heap: most words are a handful of symbols.
const shortWord = 48

// mergeShort repeatedly merges the lowest-ranked adjacent pair, leftmost
// first on ties — the same order as HF's heap of (rank, position).
func (m *bpe) mergeShort(syms []int32) []int32 {
	for len(syms) > 1 {
		best, bestRank := -1, int32(0)
		var bestID int32
		for i := 0; i+1 < len(syms); i++ {
			if mi, ok := m.merges[pairKey(syms[i], syms[i+1])]; ok && (best < 0 || mi.rank < bestRank) {
				best, bestRank, bestID = i, mi.rank, mi.id
			}
		}
		if best < 0 {
			break
		}
		syms[best] = bestID
		syms = append(syms[:best+1], syms[best+2:]...)
	}
	return syms
}

// mergeHeap is the O(n log n) merge for long words (e.g. a run of 10k
// identical characters), with symbols in a linked list and stale heap
// entries skipped when popped. An entry is one uint64, rank<<32 | position,
// so the heap orders by rank, then leftmost first, as HF's heap does, and
// costs 8 bytes a symbol with no allocation per push.
func (m *bpe) mergeHeap(syms []int32) []int32 { return m.mergeHeapIn(syms, nil) }

// mergeScratch holds the buffers of one merge, reused from chunk to chunk
// of a long word so that its memory is bounded by one chunk's.
type mergeScratch struct {
	syms, prev, next []int32
	pairRank, pairID []int32
	heap             mergeHeap
}

// grow returns buf resliced to n, reallocated only when too small.
func grow[T any](buf []T, n int) []T {
	if cap(buf) < n {
		return make([]T, n)
	}
	return buf[:n]
}

// mergeHeapIn is mergeHeap working in sc's buffers when sc is not nil.
func (m *bpe) mergeHeapIn(syms []int32, sc *mergeScratch) []int32 {
	n := len(syms)
	if m.onMerge != nil {
		m.onMerge(n)
	}
	if sc == nil {
		sc = &mergeScratch{}
	}
	prev, next := grow(sc.prev, n), grow(sc.next, n)
	// pairRank[i] and pairID[i] are the merge of the pair starting at i
	// (rank -1: none), kept current so that a popped entry is checked
	// without a second lookup: it is live when its rank is still the one
	// of its position's pair (a rank names one pair).
	pairRank, pairID := grow(sc.pairRank, n), grow(sc.pairID, n)
	sc.prev, sc.next, sc.pairRank, sc.pairID = prev, next, pairRank, pairID
	for i := range syms {
		prev[i], next[i] = int32(i-1), int32(i+1)
	}
	next[n-1] = -1
	h := mergeHeap(grow([]uint64(sc.heap), n)[:0])
	defer func() { sc.heap = h }()
	// pair looks up the merge of the pair starting at i and records it;
	// it reports whether there is one.
	pair := func(i int32) bool {
		pairRank[i] = -1
		if j := next[i]; j >= 0 {
			if mi, ok := m.merges[pairKey(syms[i], syms[j])]; ok {
				pairRank[i], pairID[i] = mi.rank, mi.id
				return true
			}
		}
		return false
	}
	for i := int32(0); i < int32(n); i++ {
		if pair(i) {
			h = append(h, uint64(pairRank[i])<<32|uint64(i))
		}
	}
	h.init()
	for len(h) > 0 {
		it := h.pop()
		rank, i := int32(it>>32), int32(uint32(it))
		if syms[i] < 0 || pairRank[i] != rank {
			continue // stale: an earlier merge changed either symbol
		}
		j := next[i]
		syms[i], syms[j], pairRank[j] = pairID[i], -1, -1
		next[i] = next[j]
		if next[j] >= 0 {
			prev[next[j]] = i
		}
		if p := prev[i]; p >= 0 && pair(p) {
			h.push(uint64(pairRank[p])<<32 | uint64(p))
		}
		if pair(i) {
			h.push(uint64(pairRank[i])<<32 | uint64(i))
		}
	}
	out := syms[:0]
	for i := int32(0); i >= 0; i = next[i] {
		out = append(out, syms[i])
	}
	return out
}

// mergeHeap is a binary min-heap of rank<<32 | position entries.
type mergeHeap []uint64

func (h *mergeHeap) push(x uint64) {
	*h = append(*h, x)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if a[p] <= a[i] {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

// init orders the entries appended so far, in linear time.
func (h mergeHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *mergeHeap) pop() uint64 {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	a.down(0)
	*h = a
	return top
}

// down moves the entry at i down to its place.
func (a mergeHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(a) {
			break
		}
		c := l
		if r := l + 1; r < len(a) && a[r] < a[l] {
			c = r
		}
		if a[i] <= a[c] {
			break
		}
		a[i], a[c] = a[c], a[i]
		i = c
	}
}

// wordCache is a bounded, sharded word → ids cache safe for concurrent
// Encode calls. A full shard is simply cleared: cheaper than LRU
// bookkeeping, and a natural-language working set refills it quickly.
type wordCache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

const (
	cacheShards     = 16
	cacheShardLimit = 4096 // words per shard
	cacheMaxWordLen = 64   // longer words are rare and not worth caching
)

type cacheShard struct {
	mu sync.RWMutex
	m  map[string][]int32
}

func (c *wordCache) init() {
	c.seed = maphash.MakeSeed()
	for i := range c.shards {
		c.shards[i].m = make(map[string][]int32)
	}
}

func (c *wordCache) shard(word string) *cacheShard {
	return &c.shards[maphash.String(c.seed, word)%cacheShards]
}

func (c *wordCache) get(word string) ([]int32, bool) {
	if len(word) > cacheMaxWordLen {
		return nil, false
	}
	s := c.shard(word)
	s.mu.RLock()
	ids, ok := s.m[word]
	s.mu.RUnlock()
	return ids, ok
}

func (c *wordCache) put(word string, ids []int32) {
	if len(word) > cacheMaxWordLen {
		return
	}
	s := c.shard(word)
	s.mu.Lock()
	if len(s.m) >= cacheShardLimit {
		clear(s.m)
	}
	// Clone: word may be a slice of a caller's large input string.
	s.m[strings.Clone(word)] = ids
	s.mu.Unlock()
}
