// Package tokenizer loads a Hugging Face tokenizer.json and encodes and
// decodes text exactly as the HF tokenizers library does, for the tokenizers
// of the Llama family:
//
//   - byte-level BPE (Llama 3, and GPT-4-style tokenizers such as DBRX's):
//     Split pre-tokenizer with the Llama 3 regex, which is GPT-4's cl100k
//     pattern (implemented as a hand-written scanner, since Go's regexp
//     lacks the lookahead it uses), ByteLevel mapping, merges by rank,
//     ignore_merges, TemplateProcessing or ByteLevel post-processor and
//     ByteLevel decoder;
//   - SentencePiece-style BPE (Llama 2, Mistral): Prepend/Replace
//     normalizers or the Metaspace pre-tokenizer, byte_fallback, fuse_unk,
//     and the Replace/ByteFallback/Fuse/Strip (or Metaspace) decoders;
//   - added tokens (special or not), matched in the input before
//     pre-tokenization, leftmost and longest first, honouring their lstrip,
//     rstrip, normalized and single_word flags.
//
// The contract: for a supported tokenizer.json, Encode(text, false) returns
// the ids of HF's encode(text, add_special_tokens=False), Encode(text, true)
// those of add_special_tokens=True, and Decode(ids, skip) the text of HF's
// tokenizers decode(ids, skip_special_tokens=skip) (without transformers'
// clean_up_tokenization_spaces). Anything outside the supported set —
// another model type, normalizer, pre-tokenizer, post-processor, decoder or
// Split regex — makes Load fail with an error naming the file and the JSON
// field, rather than tokenizing differently from HF.
//
// A Tokenizer is immutable after loading apart from an internal, bounded
// word cache, and is safe for concurrent use.
package tokenizer

import "strings"

// Tokenizer encodes and decodes text for one tokenizer.json.
type Tokenizer struct {
	path string

	model       *bpe
	normalizers []func(string) string // applied in order; nil when none
	splitters   []splitter            // pre-tokenizer Split/Metaspace steps

	// rawAdded matches non-normalized added tokens in the raw input;
	// normAdded matches normalized ones in each normalized piece.
	rawAdded, normAdded *matcher
	added               []AddedToken
	addedByID           map[int]AddedToken

	addedIDs  map[string]int // added tokens; model.vocab has the rest
	idToToken []string       // by id; "" where no token has that id
	hasID     []bool

	post    *template // nil: add_special_tokens adds nothing
	decoder decoder   // nil: tokens are joined with spaces, as HF does

	special Special
}

// template is a TemplateProcessing post-processor for single sequences.
type template struct {
	before, after []int // ids around the sequence
}

// Special holds the special-token ids a trainer needs. Ids are -1 when
// unknown.
type Special struct {
	BOS, EOS int
	// EOSIDs lists every id that ends a generation: EOS, then the
	// eos_token_id values (int or list) of generation_config.json and
	// config.json when present, without duplicates.
	EOSIDs []int
	PAD    int // -1 if none
	// BOSToken and EOSToken are the token strings of BOS and EOS.
	BOSToken, EOSToken string
	// AddBOS reports whether encoding with special tokens starts with BOS:
	// tokenizer_config.json's add_bos_token when set, else whether the
	// post-processor template puts BOS first.
	AddBOS bool
}

// Encode returns the token ids of text. addSpecial applies the
// post-processor as HF's add_special_tokens=True (for Llama, BOS first).
// Added tokens written in the text (e.g. "<|eot_id|>") always encode to
// their ids, as in HF.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	ids := make([]int, 0, len(text)/3+4)
	if addSpecial && t.post != nil {
		ids = append(ids, t.post.before...)
	}
	ids = t.encodeText(ids, text)
	if addSpecial && t.post != nil {
		ids = append(ids, t.post.after...)
	}
	return ids
}

func (t *Tokenizer) encodeText(ids []int, text string) []int {
	// first: the piece starts the text (Metaspace's prepend_scheme "first").
	pieces := 0
	t.rawAdded.split(text, func(piece string) {
		first := pieces == 0
		pieces++
		for _, n := range t.normalizers {
			piece = n(piece)
		}
		t.normAdded.split(piece, func(sub string) {
			ids = t.encodeWords(ids, sub, first)
			first = false
		}, func(a AddedToken) {
			ids = append(ids, a.ID)
			first = false
		})
	}, func(a AddedToken) {
		ids = append(ids, a.ID)
		pieces++
	})
	return ids
}

// encodeWords pre-tokenizes s and runs the model on each word.
func (t *Tokenizer) encodeWords(ids []int, s string, first bool) []int {
	var run func(level int, s string)
	run = func(level int, s string) {
		if level == len(t.splitters) {
			if s != "" {
				ids = t.model.appendWord(ids, s)
			}
			return
		}
		t.splitters[level].split(s, first, func(w string) { run(level+1, w) })
	}
	run(0, s)
	return ids
}

// Decode returns the text of ids. skipSpecial drops special added tokens
// (BOS, <|eot_id|>, ...). Unknown ids are ignored, as HF does.
func (t *Tokenizer) Decode(ids []int, skipSpecial bool) string {
	tokens := make([]string, 0, len(ids))
	for _, id := range ids {
		if id < 0 || id >= len(t.idToToken) || !t.hasID[id] {
			continue
		}
		if skipSpecial {
			if a, ok := t.addedByID[id]; ok && a.Special {
				continue
			}
		}
		tokens = append(tokens, t.idToToken[id])
	}
	if t.decoder == nil {
		return strings.Join(tokens, " ")
	}
	return strings.Join(t.decoder.decodeChain(tokens), "")
}

// TokenBytes returns the bytes token id stands for in the normalized text:
// a SentencePiece piece with "▁" as a space, a byte-fallback token "<0xNN>"
// its one byte, a byte-level token its bytes, an added token its content.
// Unlike Decode it applies no step that looks across tokens (Fuse, Strip,
// the first-token space strip), so consecutive tokens' bytes concatenate to
// the text the model saw, including a space a SentencePiece normalizer or
// pre-tokenizer prepended. ok is false for an unknown id.
func (t *Tokenizer) TokenBytes(id int) (b string, ok bool) {
	tok, ok := t.Token(id)
	if !ok {
		return "", false
	}
	if _, added := t.addedByID[id]; added || t.decoder == nil {
		return tok, true
	}
	return tokenBytes(t.decoder, tok), true
}

// VocabSize returns the number of token ids, added tokens included (the
// embedding rows a model needs: highest id + 1).
func (t *Tokenizer) VocabSize() int { return len(t.idToToken) }

// TokenID returns the id of a vocabulary or added token string (in the
// model's alphabet, e.g. "Ġthe" for byte-level BPE).
func (t *Tokenizer) TokenID(tok string) (int, bool) {
	if id, ok := t.addedIDs[tok]; ok {
		return id, true
	}
	id, ok := t.model.vocab[tok]
	return id, ok
}

// Token returns the token string of id.
func (t *Tokenizer) Token(id int) (string, bool) {
	if id < 0 || id >= len(t.idToToken) || !t.hasID[id] {
		return "", false
	}
	return t.idToToken[id], true
}

// Special returns the special-token ids.
func (t *Tokenizer) Special() Special {
	s := t.special
	s.EOSIDs = append([]int(nil), s.EOSIDs...)
	return s
}

// AddedTokens returns the added tokens in file order.
func (t *Tokenizer) AddedTokens() []AddedToken {
	return append([]AddedToken(nil), t.added...)
}

// IsSpecial reports whether id is a special added token.
func (t *Tokenizer) IsSpecial(id int) bool {
	a, ok := t.addedByID[id]
	return ok && a.Special
}

// Path returns the tokenizer.json the tokenizer was loaded from.
func (t *Tokenizer) Path() string { return t.path }
