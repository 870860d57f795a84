package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// A splitter cuts a string into words; every byte of s belongs to exactly one
// word, in order. first reports whether s starts the encoded text (Metaspace's
// prepend_scheme "first" depends on it).
type splitter interface {
	split(s string, first bool, emit func(word string))
}

// llama3Pattern is the Split regex of Llama 3 tokenizer.json files, which
// is GPT-4's cl100k_base pattern (DBRX's tokenizer); the Qwen2 family uses
// the same pattern with \p{N} instead of \p{N}{1,3}.
const (
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// regexSplitter is a hand-written matcher for llama3Pattern (Go's regexp has
// no lookahead). It reproduces the regex's leftmost-first alternation with
// backtracking, with \s as Unicode White_Space (Oniguruma's \s, which HF
// tokenizers uses) and \p{L}/\p{N} from the unicode package. Every character
// is matched by some alternative, so the Isolated split has no gaps.
type regexSplitter struct {
	maxDigits int // the n of \p{N}{1,n}
}

type charClass uint8

const (
	clsOther   charClass = iota // not \s, \p{L} or \p{N}
	clsLetter                   // \p{L}
	clsNumber                   // \p{N}
	clsSpace                    // \s other than \r and \n
	clsNewline                  // \r or \n (also \s)
)

var asciiClass = func() (t [128]charClass) {
	for c := 0; c < 128; c++ {
		switch {
		case c == '\r' || c == '\n':
			t[c] = clsNewline
		case c == ' ' || (c >= '\t' && c <= '\f'):
			t[c] = clsSpace
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			t[c] = clsLetter
		case c >= '0' && c <= '9':
			t[c] = clsNumber
		}
	}
	return t
}()

// classAt returns the class and byte size of the character at s[i]. An
// invalid UTF-8 byte counts as one "other" character.
func classAt(s string, i int) (charClass, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, size := utf8.DecodeRuneInString(s[i:])
	switch {
	case r == utf8.RuneError && size == 1:
		return clsOther, 1
	case unicode.IsLetter(r):
		return clsLetter, size
	case unicode.IsNumber(r):
		return clsNumber, size
	case unicode.Is(unicode.White_Space, r):
		return clsSpace, size // U+0085, U+2028 etc. are \s but not [\r\n]
	}
	return clsOther, size
}

func (p regexSplitter) split(s string, _ bool, emit func(string)) {
	for i := 0; i < len(s); {
		end := p.match(s, i)
		emit(s[i:end])
		i = end
	}
}

// match returns the end of the regex match starting at i (always > i).
func (p regexSplitter) match(s string, i int) int {
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)
	if s[i] == '\'' {
		if n := contraction(s[i+1:]); n > 0 {
			return i + 1 + n
		}
	}
	c0, n0 := classAt(s, i)
	switch c0 {
	case clsLetter: // [^\r\n\p{L}\p{N}]?\p{L}+ with the optional part empty
		return p.letters(s, i+n0)
	case clsNumber: // \p{N}{1,n}
		j := i + n0
		for k := 1; k < p.maxDigits && j < len(s); k++ {
			c, n := classAt(s, j)
			if c != clsNumber {
				break
			}
			j += n
		}
		return j
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+ with one leading non-letter (space or other).
	if c0 != clsNewline && i+n0 < len(s) {
		if c1, _ := classAt(s, i+n0); c1 == clsLetter {
			return p.letters(s, i+n0)
		}
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	j := i
	if s[i] == ' ' && i+1 < len(s) {
		if c1, _ := classAt(s, i+1); c1 == clsOther {
			j = i + 1
		}
	}
	if c, _ := classAt(s, j); c == clsOther {
		for j < len(s) {
			c, n := classAt(s, j)
			if c != clsOther {
				break
			}
			j += n
		}
		for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
			j++
		}
		return j
	}
	// c0 is whitespace. Find the maximal run, its last \r/\n, and where its
	// last character starts.
	end, lastNL, lastStart := i, -1, i
	for end < len(s) {
		c, n := classAt(s, end)
		if c != clsSpace && c != clsNewline {
			break
		}
		if c == clsNewline {
			lastNL = end
		}
		lastStart = end
		end += n
	}
	switch {
	case lastNL >= 0: // \s*[\r\n]+ : backtracks to the last newline
		return lastNL + 1
	case end == len(s): // \s+(?!\S) at the end of the text
		return end
	case lastStart > i: // \s+(?!\S): leave the last space for the next word
		return lastStart
	}
	return end // \s+ : a single space before a non-space
}

// letters returns the end of the run of letters starting at j.
func (regexSplitter) letters(s string, j int) int {
	for j < len(s) {
		c, n := classAt(s, j)
		if c != clsLetter {
			break
		}
		j += n
	}
	return j
}

// contraction returns the length of the case-insensitive contraction suffix
// (s, t, re, ve, m, ll, d) at the start of s, or 0. Oniguruma folds case
// with Unicode simple folding, under which U+017F (long s) matches "s".
func contraction(s string) int {
	if s == "" {
		return 0
	}
	if strings.HasPrefix(s, "\u017f") {
		return len("\u017f")
	}
	lower := func(i int) byte {
		if i >= len(s) {
			return 0
		}
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		return c
	}
	switch lower(0) {
	case 's', 't', 'm', 'd':
		return 1
	case 'r', 'v':
		if lower(1) == 'e' {
			return 2
		}
	case 'l':
		if lower(1) == 'l' {
			return 2
		}
	}
	return 0
}

// metaspace is the Metaspace pre-tokenizer (SentencePiece-style files that
// do not use the Prepend/Replace normalizers): spaces become the
// replacement rune, a replacement is prepended per prepend_scheme, and the
// text is split before each replacement rune when split is set.
type metaspace struct {
	repl       string
	prepend    string // "always", "first" or "never"
	splitWords bool
}

func (m metaspace) prepare(s string, first bool) string {
	s = strings.ReplaceAll(s, " ", m.repl)
	if !strings.HasPrefix(s, m.repl) && (m.prepend == "always" || m.prepend == "first" && first) {
		s = m.repl + s
	}
	return s
}

func (m metaspace) split(s string, first bool, emit func(string)) {
	s = m.prepare(s, first)
	if !m.splitWords {
		emit(s)
		return
	}
	// MergedWithNext: each replacement rune starts a new word.
	start := 0
	for i := 1; i < len(s); i++ {
		if strings.HasPrefix(s[i:], m.repl) {
			emit(s[start:i])
			start = i
		}
	}
	if start < len(s) {
		emit(s[start:])
	}
}

// byteToRune is GPT-2's byte-to-unicode table used by ByteLevel: printable
// Latin-1 bytes map to themselves and the rest to U+0100 upward, so every
// byte string becomes a printable string without spaces.
var byteToRune, runeToByte = func() (b2r [256]rune, r2b map[rune]byte) {
	r2b = make(map[rune]byte, 256)
	n := 0
	for b := 0; b < 256; b++ {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF {
			b2r[b] = rune(b)
		} else {
			b2r[b] = rune(256 + n)
			n++
		}
		r2b[b2r[b]] = byte(b)
	}
	return b2r, r2b
}()

// byteLevelString maps every byte of s through byteToRune.
func byteLevelString(s string) string {
	var sb strings.Builder
	sb.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		sb.WriteRune(byteToRune[s[i]])
	}
	return sb.String()
}
