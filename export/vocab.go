package export

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"hone/tokenizer"
)

// llama.cpp's token types (gguf-py TokenType).
const (
	tokNormal      int32 = 1
	tokUnknown     int32 = 2
	tokControl     int32 = 3
	tokUserDefined int32 = 4
	tokUnused      int32 = 5
	tokByte        int32 = 6
)

// vocab is the tokenizer as GGUF stores it.
type vocab struct {
	model  string // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
	pre    string // tokenizer.ggml.pre
	tokens []string
	types  []int32
	scores []float32 // "llama" only
	merges []string  // "gpt2" only
	unk    int       // -1 when none
}

// tokenizerJSON is the part of tokenizer.json the GGUF vocabulary needs
// beyond what hone's tokenizer exposes.
type tokenizerJSON struct {
	Model struct {
		Type         string          `json:"type"`
		ByteFallback bool            `json:"byte_fallback"`
		UnkToken     *string         `json:"unk_token"`
		Merges       json.RawMessage `json:"merges"`
	} `json:"model"`
	Decoder struct {
		Type string `json:"type"`
	} `json:"decoder"`
}

var byteTokenRE = regexp.MustCompile(`^<0x[0-9A-Fa-f]{2}>$`)

// loadVocab builds the GGUF vocabulary of the model in dir, padded to
// vocabSize (the embedding's rows) as llama.cpp's converter pads it.
func loadVocab(dir string, tok *tokenizer.Tokenizer, vocabSize int) (*vocab, error) {
	path := filepath.Join(dir, "tokenizer.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("export: read tokenizer: %w", err)
	}
	var tj tokenizerJSON
	if err := json.Unmarshal(b, &tj); err != nil {
		return nil, fmt.Errorf("export: %s: %w", path, err)
	}
	if tj.Model.Type != "BPE" {
		return nil, fmt.Errorf("export: %s: model.type %q: GGUF export supports BPE tokenizers (Llama 3 byte-level, Llama 2/Mistral SentencePiece)", path, tj.Model.Type)
	}
	if tok.VocabSize() > vocabSize {
		return nil, fmt.Errorf("export: %s has %d tokens but config.json vocab_size is %d", path, tok.VocabSize(), vocabSize)
	}
	merges, err := parseMerges(tj.Model.Merges)
	if err != nil {
		return nil, fmt.Errorf("export: %s: model.merges: %w", path, err)
	}
	v := &vocab{tokens: make([]string, vocabSize), types: make([]int32, vocabSize), unk: -1}
	switch {
	case !tj.Model.ByteFallback && tj.Decoder.Type == "ByteLevel":
		// hone's tokenizer loads byte-level BPE only with Llama 3's Split
		// regex, which is llama.cpp's "llama-bpe" pre-tokenizer.
		v.model, v.pre = "gpt2", "llama-bpe"
		for _, m := range merges {
			// Spaces inside a merge part are written as GPT-2's byte
			// symbol for space, as llama.cpp's converter does.
			v.merges = append(v.merges, strings.ReplaceAll(m[0], " ", "Ġ")+" "+strings.ReplaceAll(m[1], " ", "Ġ"))
		}
	case tj.Model.ByteFallback:
		v.model, v.pre = "llama", "default"
		v.scores = make([]float32, vocabSize)
	default:
		return nil, fmt.Errorf("export: %s: a BPE tokenizer without byte_fallback or a ByteLevel decoder is neither Llama 3's nor SentencePiece's; llama.cpp would tokenize it differently", path)
	}
	if tj.Model.UnkToken != nil {
		if id, ok := tok.TokenID(*tj.Model.UnkToken); ok {
			v.unk = id
		}
	}
	v.fill(tok, merges)
	return v, nil
}

// fill sets tokens, types and (SentencePiece) scores.
func (v *vocab) fill(tok *tokenizer.Tokenizer, merges [][2]string) {
	added := map[int]tokenizer.AddedToken{}
	for _, a := range tok.AddedTokens() {
		added[a.ID] = a
	}
	// SentencePiece merges by piece score, HF's BPE by merge rank; HF built
	// the merge list in score order, so a piece's score is minus the rank
	// of the first merge producing it.
	rank := map[string]int{}
	if v.model == "llama" {
		for i, m := range merges {
			if _, ok := rank[m[0]+m[1]]; !ok {
				rank[m[0]+m[1]] = i
			}
		}
	}
	for id := range v.tokens {
		text, ok := tok.Token(id)
		if !ok {
			v.tokens[id], v.types[id] = fmt.Sprintf("[PAD%d]", id), tokUnused
			if v.scores != nil {
				v.scores[id] = -10000
			}
			continue
		}
		typ := tokNormal
		if a, isAdded := added[id]; isAdded {
			if a.Special || looksSpecial(text) {
				typ = tokControl
			} else {
				typ = tokUserDefined
				if v.model == "llama" {
					text = strings.ReplaceAll(text, "▁", " ")
				}
			}
		}
		if v.model == "llama" {
			switch {
			case id == v.unk:
				typ = tokUnknown
			case byteTokenRE.MatchString(text):
				typ = tokByte
			}
			if r, ok := rank[text]; ok && typ == tokNormal {
				v.scores[id] = -float32(r)
			} else if typ == tokNormal {
				v.scores[id] = -float32(len(merges) + id)
			}
		}
		v.tokens[id], v.types[id] = text, typ
	}
}

// looksSpecial marks added tokens that are control tokens even when the
// tokenizer does not flag them special (llama.cpp's does_token_look_special).
func looksSpecial(s string) bool {
	return strings.HasPrefix(s, "<|") && strings.HasSuffix(s, "|>")
}

// parseMerges reads tokenizer.json merges in either form: "a b" strings or
// ["a", "b"] pairs (transformers 4.45 and later).
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, err
	}
	out := make([][2]string, len(items))
	for i, it := range items {
		var s string
		if err := json.Unmarshal(it, &s); err == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("merge %d %q has no space", i, s)
			}
			out[i] = [2]string{a, b}
			continue
		}
		var pair []string
		if err := json.Unmarshal(it, &pair); err != nil || len(pair) != 2 {
			return nil, fmt.Errorf("merge %d is neither \"a b\" nor [\"a\", \"b\"]: %s", i, it)
		}
		out[i] = [2]string{pair[0], pair[1]}
	}
	return out, nil
}
