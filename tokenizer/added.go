package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// AddedToken is an entry of tokenizer.json's added_tokens: a string matched
// verbatim in the input before pre-tokenization.
type AddedToken struct {
	ID      int
	Content string
	Special bool // skipped by Decode(ids, true)
	// LStrip/RStrip: the match swallows whitespace on its left/right.
	LStrip, RStrip bool
	// Normalized: matched in the normalized text instead of the raw text.
	Normalized bool
	// SingleWord: matched only when not inside a word.
	SingleWord bool
}

// matcher finds added tokens in text, leftmost first and longest at a given
// start, as HF's Aho-Corasick (MatchKind::LeftmostLongest) does. A byte trie
// is enough here: the token set is small and most input bytes are rejected
// by the first-byte table without touching the trie.
type matcher struct {
	first  [256]bool
	root   trieNode
	tokens []AddedToken
}

type trieNode struct {
	next map[byte]*trieNode
	tok  int // index into matcher.tokens, -1 if no token ends here
}

func newMatcher(tokens []AddedToken) *matcher {
	m := &matcher{root: trieNode{tok: -1}}
	for _, t := range tokens {
		if t.Content == "" {
			continue
		}
		n := &m.root
		for i := 0; i < len(t.Content); i++ {
			c := t.Content[i]
			if n.next == nil {
				n.next = make(map[byte]*trieNode)
			}
			child := n.next[c]
			if child == nil {
				child = &trieNode{tok: -1}
				n.next[c] = child
			}
			n = child
		}
		if n.tok < 0 { // the first of duplicate contents wins
			n.tok = len(m.tokens)
			m.tokens = append(m.tokens, t)
		}
		m.first[t.Content[0]] = true
	}
	return m
}

func (m *matcher) empty() bool { return len(m.tokens) == 0 }

// longestAt returns the token index and end of the longest token starting at
// i, or -1.
func (m *matcher) longestAt(s string, i int) (tok, end int) {
	tok = -1
	n := &m.root
	for j := i; j < len(s); j++ {
		n = n.next[s[j]]
		if n == nil {
			break
		}
		if n.tok >= 0 {
			tok, end = n.tok, j+1
		}
	}
	return tok, end
}

// split calls text(piece) for the text between matches and token(t) for each
// match, in order. Empty pieces are not reported.
func (m *matcher) split(s string, text func(string), token func(AddedToken)) {
	if m.empty() {
		if s != "" {
			text(s)
		}
		return
	}
	start := 0 // start of the pending text piece
	for i := 0; i < len(s); i++ {
		if !m.first[s[i]] {
			continue
		}
		ti, end := m.longestAt(s, i)
		if ti < 0 {
			continue
		}
		t := m.tokens[ti]
		mStart, mEnd := i, end
		if t.SingleWord && !isSingleWord(s, mStart, mEnd) {
			continue
		}
		if t.LStrip {
			for mStart > start {
				r, n := utf8.DecodeLastRuneInString(s[:mStart])
				if !unicode.Is(unicode.White_Space, r) {
					break
				}
				mStart -= n
			}
		}
		if t.RStrip {
			for mEnd < len(s) {
				r, n := utf8.DecodeRuneInString(s[mEnd:])
				if !unicode.Is(unicode.White_Space, r) {
					break
				}
				mEnd += n
			}
		}
		if mStart > start {
			text(s[start:mStart])
		}
		token(t)
		start = mEnd
		i = mEnd - 1
	}
	if start < len(s) {
		text(s[start:])
	}
}

// isSingleWord reports whether s[a:b] is not glued to a word character on
// either side (HF checks alphanumeric characters).
func isSingleWord(s string, a, b int) bool {
	isWord := func(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) }
	if a > 0 {
		if r, _ := utf8.DecodeLastRuneInString(s[:a]); isWord(r) {
			return false
		}
	}
	if b < len(s) {
		if r, _ := utf8.DecodeRuneInString(s[b:]); isWord(r) {
			return false
		}
	}
	return true
}
