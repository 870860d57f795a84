package dataset

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"hone/chattemplate"
	"hone/tokenizer"
)

// trainedBit marks a trained token in the stored form id | trainedBit.
const trainedBit = 1 << 31

// encoded is one tokenized example in the stored form.
type encoded struct {
	text string
	toks []uint32
}

func (e encoded) trainedCount() int {
	n := 0
	for _, t := range e.toks {
		if t&trainedBit != 0 {
			n++
		}
	}
	return n
}

// example converts e to the public form.
func (e encoded) example() Example {
	ex := Example{Text: e.text, InputIDs: make([]int, len(e.toks)), Labels: make([]int, len(e.toks))}
	for i, t := range e.toks {
		id := int(t &^ trainedBit)
		ex.InputIDs[i] = id
		ex.Labels[i] = IgnoreIndex
		if t&trainedBit != 0 {
			ex.Labels[i] = id
		}
	}
	return ex
}

func appendIDs(dst []uint32, ids []int, trained bool) []uint32 {
	var bit uint32
	if trained {
		bit = trainedBit
	}
	for _, id := range ids {
		dst = append(dst, uint32(id)|bit)
	}
	return dst
}

// templateError is a chat example the template refused or could not render.
type templateError struct{ err error }

func (e *templateError) Error() string { return e.err.Error() }

func (m *model) render(msgs []chattemplate.Message, genPrompt bool) (string, error) {
	s, err := m.tpl.Render(msgs, chattemplate.Options{AddGenerationPrompt: genPrompt, Now: func() time.Time { return m.now }})
	if err != nil {
		var re *chattemplate.RaiseError
		if errors.As(err, &re) {
			return "", &templateError{fmt.Errorf("the chat template refused the conversation: %s", re.Message)}
		}
		return "", &templateError{fmt.Errorf("rendering the chat template: %v", err)}
	}
	return s, nil
}

// encodeChat renders and tokenizes a conversation, training the spans loss
// selects (see the package documentation).
func (m *model) encodeChat(msgs []chattemplate.Message, loss string) (encoded, error) {
	full, err := m.render(msgs, false)
	if err != nil {
		return encoded{}, err
	}
	var spans [][2]int
	if loss == LossAll {
		spans = [][2]int{{0, len(full)}}
	} else {
		for i, msg := range msgs {
			if msg.Role != "assistant" {
				continue
			}
			before, err := m.render(msgs[:i], true)
			if err != nil {
				return encoded{}, err
			}
			through, err := m.render(msgs[:i+1], false)
			if err != nil {
				return encoded{}, err
			}
			if !strings.HasPrefix(full, before) || !strings.HasPrefix(full, through) || len(through) < len(before) {
				return encoded{}, &templateError{fmt.Errorf("the chat template renders messages[%d] differently when later turns follow; cannot locate the assistant turn exactly", i)}
			}
			spans = append(spans, [2]int{len(before), len(through)})
		}
		if loss == LossLastAssistant && len(spans) > 0 {
			spans = spans[len(spans)-1:]
		}
	}
	var e encoded
	text := full
	if m.sp.AddBOS && m.sp.BOS >= 0 && !strings.HasPrefix(full, m.sp.BOSToken) {
		e.toks = appendIDs(e.toks, []int{m.sp.BOS}, loss == LossAll)
		text = m.sp.BOSToken + full
	}
	toks, err := m.tokenizeSpans(full, spans)
	if err != nil {
		return encoded{}, err
	}
	e.toks = append(e.toks, toks...)
	e.text = text
	return e, nil
}

// encodeInstruct tokenizes prompt and response separately and concatenates
// them between BOS (when the tokenizer adds one) and EOS.
func (m *model) encodeInstruct(prompt, response string) encoded {
	var e encoded
	var sb strings.Builder
	if m.sp.AddBOS && m.sp.BOS >= 0 {
		e.toks = appendIDs(e.toks, []int{m.sp.BOS}, false)
		sb.WriteString(m.sp.BOSToken)
	}
	e.toks = appendIDs(e.toks, m.tok.Encode(prompt, false), false)
	e.toks = appendIDs(e.toks, m.tok.Encode(response, false), true)
	e.toks = appendIDs(e.toks, []int{m.sp.EOS}, true)
	sb.WriteString(prompt)
	sb.WriteString(response)
	sb.WriteString(m.sp.EOSToken)
	e.text = sb.String()
	return e
}

// tokenizeSpans tokenizes text (without special tokens) and marks the tokens
// of the trained byte spans (sorted, disjoint). It tokenizes the pieces
// between span boundaries separately and checks that this equals tokenizing
// the whole text; if a token crosses a boundary it keeps the whole-text
// tokens and maps each to its bytes exactly (alignTokens).
func (m *model) tokenizeSpans(text string, spans [][2]int) ([]uint32, error) {
	cuts := []int{0, len(text)}
	for _, s := range spans {
		cuts = append(cuts, s[0], s[1])
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var pieces []uint32
	var pieceIDs []int
	for i := 0; i+1 < len(cuts); i++ {
		a, b := cuts[i], cuts[i+1]
		ids := m.tok.Encode(text[a:b], false)
		pieces = appendIDs(pieces, ids, inSpans(spans, a, b))
		pieceIDs = append(pieceIDs, ids...)
	}
	full := m.tok.Encode(text, false)
	if slices.Equal(full, pieceIDs) {
		return pieces, nil
	}
	starts, ends, err := m.alignTokens(text, full)
	if err != nil {
		return nil, err
	}
	out := make([]uint32, len(full))
	for i, id := range full {
		out[i] = uint32(id)
		a, b := starts[i], ends[i]
		if a == b {
			b = a + 1 // a zero-width token (a prepended "▁") goes with the byte it precedes
		}
		if inSpans(spans, a, b) {
			out[i] |= trainedBit
		}
	}
	return out, nil
}

// inSpans reports whether the byte range [a, b) overlaps a span.
func inSpans(spans [][2]int, a, b int) bool {
	for _, s := range spans {
		if a < s[1] && b > s[0] {
			return true
		}
	}
	return false
}

// alignTokens maps each token of ids (the tokenization of text) to its byte
// range in text, walking the tokens' own bytes (Tokenizer.TokenBytes)
// along the text. Three things make those bytes differ from the text, and
// are undone here:
//   - a SentencePiece tokenizer (Llama 2, Mistral) prepends "▁" to the text
//     after each added token and at the start (its decoder strips it
//     again): once per such segment, a token's leading space that the text
//     lacks is taken as the prepended one and given no bytes;
//   - an added token with lstrip/rstrip swallows the whitespace beside it,
//     which then belongs to that token;
//   - byte-fallback and byte-level tokens may hold part of a character;
//     they get exactly their bytes.
//
// It fails when the tokens do not spell text exactly.
func (m *model) alignTokens(text string, ids []int) (starts, ends []int, err error) {
	starts, ends = make([]int, len(ids)), make([]int, len(ids))
	added := map[int]tokenizer.AddedToken{}
	for _, a := range m.tok.AddedTokens() {
		added[a.ID] = a
	}
	cur, prepend := 0, true // prepend: this segment's prepended space is not yet seen
	for i, id := range ids {
		b, _ := m.tok.TokenBytes(id)
		a, isAdded := added[id]
		start, end := cur, -1
		switch {
		case isAdded:
			if a.LStrip {
				start = cur + len(text[cur:]) - len(strings.TrimLeftFunc(text[cur:], isWhiteSpace))
			}
			if strings.HasPrefix(text[start:], b) {
				end = start + len(b)
				if a.RStrip {
					end += len(text[end:]) - len(strings.TrimLeftFunc(text[end:], isWhiteSpace))
				}
				start = cur
			}
			prepend = true
		case strings.HasPrefix(text[cur:], b):
			end = cur + len(b)
		case prepend && strings.HasPrefix(b, " ") && strings.HasPrefix(text[cur:], b[1:]):
			end = cur + len(b) - 1
			prepend = false
		}
		if end < 0 {
			return nil, nil, fmt.Errorf("dataset: cannot map tokens to the text exactly (token %d, %q, does not match the text at byte %d: %q)", i, b, cur, clip(text[cur:], 20))
		}
		if !isAdded && strings.Trim(b, " ") != "" {
			// The prepended space leads the segment, so it is placed by now
			// (a run of space-only tokens may have taken it for a real one).
			prepend = false
		}
		starts[i], ends[i] = start, end
		cur = end
	}
	if cur != len(text) {
		return nil, nil, fmt.Errorf("dataset: cannot map tokens to the text exactly (they spell %d of %d bytes)", cur, len(text))
	}
	return starts, ends, nil
}

// clip shortens s to at most n bytes for error messages.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// isWhiteSpace is the whitespace an added token's lstrip/rstrip swallows
// (as package tokenizer matches it).
func isWhiteSpace(r rune) bool { return unicode.Is(unicode.White_Space, r) }
