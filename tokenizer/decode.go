package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// A decoder step maps the token strings to new strings, as a step of HF's
// decode_chain; the final text is the concatenation of the last step's output.
type decoder interface {
	decodeChain(tokens []string) []string
}

// byteLevelDecoder undoes the ByteLevel byte-to-rune mapping. Added tokens
// are emitted verbatim and split the byte stream, as transformers and
// tokenizers.js do (for Llama 3's ASCII special tokens HF Rust agrees).
type byteLevelDecoder struct {
	added map[string]bool
}

func (d byteLevelDecoder) decodeChain(tokens []string) []string {
	var out []string
	var buf []byte
	flush := func() {
		if len(buf) > 0 {
			out = append(out, lossyUTF8(buf))
			buf = buf[:0]
		}
	}
	for _, t := range tokens {
		if d.added[t] {
			flush()
			out = append(out, t)
			continue
		}
		start := len(buf)
		ok := true
		for _, r := range t {
			b, found := runeToByte[r]
			if !found {
				ok = false
				break
			}
			buf = append(buf, b)
		}
		if !ok {
			// A character outside the byte map: keep the token's own bytes
			// (HF Rust does the same).
			buf = append(buf[:start], t...)
		}
	}
	flush()
	return out
}

// lossyUTF8 converts b to a string, replacing each maximal invalid
// subsequence with one U+FFFD, as Rust's String::from_utf8_lossy and the
// WHATWG TextDecoder do (Go's strings.ToValidUTF8 would merge whole runs).
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r != utf8.RuneError || n > 1 {
			sb.Write(b[i : i+n])
			i += n
			continue
		}
		sb.WriteRune(utf8.RuneError)
		i += invalidPrefixLen(b[i:])
	}
	return sb.String()
}

// invalidPrefixLen returns the length of the maximal prefix of b that starts
// a well-formed UTF-8 sequence but is cut short (at least 1): the unit the
// Unicode "maximal subpart" practice replaces with a single U+FFFD.
func invalidPrefixLen(b []byte) int {
	c := b[0]
	var need int
	lo, hi := byte(0x80), byte(0xBF)
	switch {
	case c >= 0xC2 && c <= 0xDF:
		need = 1
	case c == 0xE0:
		need, lo = 2, 0xA0
	case c >= 0xE1 && c <= 0xEC || c == 0xEE || c == 0xEF:
		need = 2
	case c == 0xED:
		need, hi = 2, 0x9F
	case c == 0xF0:
		need, lo = 3, 0x90
	case c >= 0xF1 && c <= 0xF3:
		need = 3
	case c == 0xF4:
		need, hi = 3, 0x8F
	default:
		return 1
	}
	n := 1
	for ; n <= need && n < len(b); n++ {
		if b[n] < lo || b[n] > hi {
			break
		}
		lo, hi = 0x80, 0xBF // only the second byte has a narrowed range
	}
	return n
}

// replaceDecoder replaces a string in every token (SentencePiece's "▁").
type replaceDecoder struct{ old, new string }

func (d replaceDecoder) decodeChain(tokens []string) []string {
	for i, t := range tokens {
		tokens[i] = strings.ReplaceAll(t, d.old, d.new)
	}
	return tokens
}

// byteFallbackDecoder turns runs of "<0xNN>" tokens back into text; a run
// that is not valid UTF-8 becomes one U+FFFD per byte token, as in HF.
type byteFallbackDecoder struct{}

func (byteFallbackDecoder) decodeChain(tokens []string) []string {
	out := tokens[:0:0]
	var buf []byte
	flush := func() {
		if len(buf) == 0 {
			return
		}
		if utf8.Valid(buf) {
			out = append(out, string(buf))
		} else {
			for range buf {
				out = append(out, "\uFFFD")
			}
		}
		buf = buf[:0]
	}
	for _, t := range tokens {
		if b, ok := parseByteToken(t); ok {
			buf = append(buf, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// fuseDecoder joins all tokens into one, so that later steps (Strip) see the
// whole text.
type fuseDecoder struct{}

func (fuseDecoder) decodeChain(tokens []string) []string {
	return []string{strings.Join(tokens, "")}
}

// stripDecoder removes up to start leading and stop trailing copies of
// content from every token.
type stripDecoder struct {
	content     string
	start, stop int
}

func (d stripDecoder) decodeChain(tokens []string) []string {
	for i, t := range tokens {
		for k := 0; k < d.start && strings.HasPrefix(t, d.content); k++ {
			t = t[len(d.content):]
		}
		for k := 0; k < d.stop && strings.HasSuffix(t, d.content); k++ {
			t = t[:len(t)-len(d.content)]
		}
		tokens[i] = t
	}
	return tokens
}

// metaspaceDecoder maps the replacement rune back to spaces and drops the
// prefix space the pre-tokenizer added to the first token.
type metaspaceDecoder struct {
	repl       string
	stripFirst bool
}

func (d metaspaceDecoder) decodeChain(tokens []string) []string {
	for i, t := range tokens {
		t = strings.ReplaceAll(t, d.repl, " ")
		if i == 0 && d.stripFirst {
			t = strings.TrimPrefix(t, " ")
		}
		tokens[i] = t
	}
	return tokens
}

// sequenceDecoder applies its steps in order.
type sequenceDecoder []decoder

func (s sequenceDecoder) decodeChain(tokens []string) []string {
	for _, d := range s {
		tokens = d.decodeChain(tokens)
	}
	return tokens
}

// tokenBytes maps one token string through the per-token steps of d (the
// alphabet mappings), skipping the sequence-level ones (Fuse, Strip, and
// Metaspace's first-token strip) that Decode applies to the whole text.
func tokenBytes(d decoder, tok string) string {
	switch d := d.(type) {
	case sequenceDecoder:
		for _, s := range d {
			tok = tokenBytes(s, tok)
		}
	case byteLevelDecoder:
		b := make([]byte, 0, len(tok))
		for _, r := range tok {
			c, ok := runeToByte[r]
			if !ok {
				return tok // outside the byte map: the token's own bytes, as decodeChain does
			}
			b = append(b, c)
		}
		return string(b)
	case replaceDecoder:
		return strings.ReplaceAll(tok, d.old, d.new)
	case byteFallbackDecoder:
		if b, ok := parseByteToken(tok); ok {
			return string([]byte{b})
		}
	case metaspaceDecoder:
		return strings.ReplaceAll(tok, d.repl, " ")
	}
	return tok
}
