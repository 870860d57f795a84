package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEncode encodes arbitrary text with the real Llama 3.1 and Llama 2
// tokenizers: never a panic, every id in the vocabulary, and valid UTF-8
// decodes back to itself (both are lossless: byte-level BPE, and
// SentencePiece BPE with byte fallback).
func FuzzEncode(f *testing.F) {
	for _, s := range []string{"", "Hello, world!", " leading and  double  spaces ", "tabs\tand\nnewlines\r\n",
		"<|begin_of_text|>special<|eot_id|>", "<s>[INST] hi [/INST]</s>", "ünïcödé 日本語 😀 עברית", "123456789 3.14",
		"don't won't I'm", "\x00\x01\x7f", "a\u200db", "\xff\xfe invalid"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	llama3 := loadAsset(f, llama3Dir)
	llama2 := loadAsset(f, llama2Dir)
	f.Fuzz(func(t *testing.T, text string, special bool) {
		for _, tok := range []*Tokenizer{llama3, llama2} {
			ids := tok.Encode(text, special)
			for _, id := range ids {
				if id < 0 || id >= tok.VocabSize() {
					t.Fatalf("%s: Encode(%q) gave id %d outside the vocabulary of %d", tok.Path(), text, id, tok.VocabSize())
				}
			}
			if !utf8.ValidString(text) {
				tok.Decode(ids, false)
				continue
			}
			if got := tok.Decode(tok.Encode(text, false), false); got != text && !containsSpecial(tok, text) {
				t.Errorf("%s: Decode(Encode(%q)) = %q", tok.Path(), text, got)
			}
		}
	})
}

// containsSpecial reports whether text holds an added token's content,
// which Encode maps to that token whatever the surrounding spaces.
func containsSpecial(tok *Tokenizer, text string) bool {
	for _, a := range tok.AddedTokens() {
		if a.Content != "" && strings.Contains(text, a.Content) {
			return true
		}
	}
	return false
}
