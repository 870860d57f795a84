package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// maxPieceBytes bounds the text one BPE merge works on. A pre-tokenized
// word this long is never ordinary text (a 50 MB run of one letter, a
// document without spaces under a tokenizer with no pre-tokenizer); it is
// cut into chunks of at most this size so that time and memory stay linear
// in its length instead of growing with the heap of one giant merge. Words
// up to this size are merged whole, exactly as HF tokenizers does.
const maxPieceBytes = 64 << 10

// spaceMark is SentencePiece's word-boundary character, which Metaspace
// models (Llama 2, Mistral) see in place of spaces.
const spaceMark = "\u2581"

// initCuts decides whether a long word may be cut before a spaceMark that
// follows another character without changing its ids: BPE only ever emits
// vocabulary entries, so a merge can span such a cut only if some entry
// holds spaceMark right after another character. When none does (Llama 2,
// Mistral), a document the model sees as one word is cut into its words
// exactly. Not for byte-level models, whose pre-tokenizer cuts words, nor
// with ignore_merges, which looks a whole word up before merging.
func (m *bpe) initCuts() {
	if m.byteLevel || m.ignoreMerges {
		return
	}
	for tok := range m.vocab {
		for i := strings.Index(tok, spaceMark); i >= 0; {
			if i > 0 && !strings.HasSuffix(tok[:i], spaceMark) {
				return // e.g. "a▁": a merge could span the cut
			}
			j := strings.Index(tok[i+len(spaceMark):], spaceMark)
			if j < 0 {
				break
			}
			i += len(spaceMark) + j
		}
	}
	m.spaceCuts = true
}

// appendLongWord appends the ids of a word longer than maxPieceBytes. With
// spaceCuts, its exact cuts before spaceMark group it into chunks of at most
// maxPieceBytes; a stretch still longer (or any long word without
// spaceCuts) is cut at character boundaries, where its ids may differ from
// a whole-word merge at the seams. Repeated chunks (a run of one character)
// are merged once.
func (m *bpe) appendLongWord(dst []int, word string) []int {
	var last string
	var lastIDs []int32
	sc := &mergeScratch{}
	emit := func(chunk string) {
		if chunk != last {
			last, lastIDs = chunk, m.encodeWordIn(chunk, sc)
		}
		for _, id := range lastIDs {
			dst = append(dst, int(id))
		}
	}
	for len(word) > 0 {
		n := m.chunkEnd(word)
		emit(word[:n])
		word = word[n:]
	}
	return dst
}

// chunkEnd is where the next chunk of word ends: the last exact cut within
// maxPieceBytes when there is one, else the last character boundary.
func (m *bpe) chunkEnd(word string) int {
	if len(word) <= maxPieceBytes {
		return len(word)
	}
	if m.spaceCuts {
		// A cut before a spaceMark that follows another character.
		for i := strings.LastIndex(word[:maxPieceBytes+1], spaceMark); i > 0; i = strings.LastIndex(word[:i], spaceMark) {
			if !strings.HasSuffix(word[:i], spaceMark) {
				return i
			}
		}
	}
	n := maxPieceBytes
	for n > 0 && !utf8.RuneStart(word[n]) {
		n--
	}
	if n == 0 { // invalid UTF-8 throughout: any byte boundary will do
		n = maxPieceBytes
	}
	return n
}
