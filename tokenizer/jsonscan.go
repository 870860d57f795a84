package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// The vocab and merges of a Llama 3 tokenizer.json are 400k JSON entries;
// decoding them through encoding/json's reflection took most of a second.
// jsonScanner parses just these two shapes (an object of string → int, an
// array of "a b" strings or ["a", "b"] pairs) directly from the bytes that
// encoding/json has already validated.
type jsonScanner struct {
	b   []byte
	pos int
	buf []byte // scratch for unescaping
}

var errJSONShape = errors.New("unexpected JSON shape")

func (s *jsonScanner) ws() {
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// expect consumes c (after whitespace) or fails.
func (s *jsonScanner) expect(c byte) error {
	s.ws()
	if s.pos >= len(s.b) || s.b[s.pos] != c {
		return fmt.Errorf("%w: want %q at byte %d", errJSONShape, c, s.pos)
	}
	s.pos++
	return nil
}

// peek returns the next non-space byte without consuming it (0 at the end).
func (s *jsonScanner) peek() byte {
	s.ws()
	if s.pos >= len(s.b) {
		return 0
	}
	return s.b[s.pos]
}

// str parses a JSON string.
func (s *jsonScanner) str() (string, error) {
	if err := s.expect('"'); err != nil {
		return "", err
	}
	start := s.pos
	for s.pos < len(s.b) {
		c := s.b[s.pos]
		if c == '"' {
			out := string(s.b[start:s.pos])
			s.pos++
			return out, nil
		}
		if c == '\\' {
			return s.slowStr(start)
		}
		s.pos++
	}
	return "", fmt.Errorf("%w: unterminated string", errJSONShape)
}

// slowStr finishes a string with escapes, started at start.
func (s *jsonScanner) slowStr(start int) (string, error) {
	s.buf = append(s.buf[:0], s.b[start:s.pos]...)
	for s.pos < len(s.b) {
		c := s.b[s.pos]
		switch {
		case c == '"':
			s.pos++
			return string(s.buf), nil
		case c != '\\':
			s.buf = append(s.buf, c)
			s.pos++
			continue
		}
		if s.pos+1 >= len(s.b) {
			break
		}
		e := s.b[s.pos+1]
		s.pos += 2
		switch e {
		case '"', '\\', '/':
			s.buf = append(s.buf, e)
		case 'b':
			s.buf = append(s.buf, '\b')
		case 'f':
			s.buf = append(s.buf, '\f')
		case 'n':
			s.buf = append(s.buf, '\n')
		case 'r':
			s.buf = append(s.buf, '\r')
		case 't':
			s.buf = append(s.buf, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return "", fmt.Errorf("%w: bad \\u escape", errJSONShape)
			}
			if utf16.IsSurrogate(r) {
				// A pair decodes to one rune; a lone half becomes U+FFFD,
				// as encoding/json does.
				save := s.pos
				r2 := rune(-1)
				if s.pos+1 < len(s.b) && s.b[s.pos] == '\\' && s.b[s.pos+1] == 'u' {
					s.pos += 2
					r2, _ = s.hex4()
				}
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
				} else {
					r, s.pos = utf8.RuneError, save
				}
			}
			s.buf = utf8.AppendRune(s.buf, r)
		default:
			return "", fmt.Errorf("%w: bad escape \\%c", errJSONShape, e)
		}
	}
	return "", fmt.Errorf("%w: unterminated string", errJSONShape)
}

func (s *jsonScanner) hex4() (rune, bool) {
	if s.pos+4 > len(s.b) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(s.b[s.pos:s.pos+4]), 16, 16)
	if err != nil {
		return 0, false
	}
	s.pos += 4
	return rune(v), true
}

// integer parses a non-negative JSON integer.
func (s *jsonScanner) integer() (int, error) {
	s.ws()
	start := s.pos
	n := 0
	for s.pos < len(s.b) && s.b[s.pos] >= '0' && s.b[s.pos] <= '9' {
		n = n*10 + int(s.b[s.pos]-'0')
		s.pos++
		if n > 1<<31 {
			return 0, fmt.Errorf("%w: id too large", errJSONShape)
		}
	}
	if s.pos == start {
		return 0, fmt.Errorf("%w: want a non-negative integer at byte %d", errJSONShape, start)
	}
	return n, nil
}

// parseVocab parses {"token": id, ...}.
func parseVocab(raw json.RawMessage) (map[string]int, error) {
	s := &jsonScanner{b: raw}
	if err := s.expect('{'); err != nil {
		return nil, err
	}
	vocab := make(map[string]int, len(raw)/12)
	if s.peek() == '}' {
		return vocab, nil
	}
	for {
		k, err := s.str()
		if err != nil {
			return nil, err
		}
		if err := s.expect(':'); err != nil {
			return nil, err
		}
		v, err := s.integer()
		if err != nil {
			return nil, fmt.Errorf("token %q: %w", k, err)
		}
		vocab[k] = v
		if s.peek() == '}' {
			return vocab, nil
		}
		if err := s.expect(','); err != nil {
			return nil, err
		}
	}
}

// parseMerges parses ["a b", ...] or [["a", "b"], ...].
func parseMerges(raw json.RawMessage) ([]mergeEntry, error) {
	s := &jsonScanner{b: raw}
	if err := s.expect('['); err != nil {
		return nil, err
	}
	var out []mergeEntry
	if s.peek() == ']' {
		return out, nil
	}
	for i := 0; ; i++ {
		var m mergeEntry
		if s.peek() == '[' {
			s.pos++
			a, err := s.str()
			if err == nil {
				err = s.expect(',')
			}
			var b string
			if err == nil {
				b, err = s.str()
			}
			if err == nil {
				err = s.expect(']')
			}
			if err != nil {
				return nil, fmt.Errorf("merges[%d]: %w", i, err)
			}
			m = mergeEntry{a, b}
		} else {
			line, err := s.str()
			if err != nil {
				return nil, fmt.Errorf("merges[%d]: %w", i, err)
			}
			a, b, ok := cutSpace(line)
			if !ok {
				return nil, fmt.Errorf("merges[%d]: %q is not two space-separated tokens", i, line)
			}
			m = mergeEntry{a, b}
		}
		out = append(out, m)
		if s.peek() == ']' {
			return out, nil
		}
		if err := s.expect(','); err != nil {
			return nil, err
		}
	}
}

// cutSpace splits "a b" at its only space, as HF requires.
func cutSpace(line string) (a, b string, ok bool) {
	for i := 0; i < len(line); i++ {
		if line[i] == ' ' {
			a, b = line[:i], line[i+1:]
			for j := 0; j < len(b); j++ {
				if b[j] == ' ' {
					return "", "", false
				}
			}
			return a, b, true
		}
	}
	return "", "", false
}
