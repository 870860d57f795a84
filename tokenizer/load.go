package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// fileJSON is the part of tokenizer.json this package reads.
type fileJSON struct {
	AddedTokens []struct {
		ID         int    `json:"id"`
		Content    string `json:"content"`
		Special    bool   `json:"special"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		SingleWord bool   `json:"single_word"`
	} `json:"added_tokens"`
	Normalizer    *component `json:"normalizer"`
	PreTokenizer  *component `json:"pre_tokenizer"`
	PostProcessor *component `json:"post_processor"`
	Decoder       *component `json:"decoder"`
	Model         *modelJSON `json:"model"`
}

type modelJSON struct {
	Type string `json:"type"`
	// Vocab and Merges are parsed by jsonScanner, and only for BPE: other
	// model types give them other shapes.
	Vocab                   json.RawMessage `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
	UnkToken                *string         `json:"unk_token"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
	Dropout                 *float64        `json:"dropout"`
	FuseUnk                 bool            `json:"fuse_unk"`
	ByteFallback            bool            `json:"byte_fallback"`
	IgnoreMerges            bool            `json:"ignore_merges"`
}

// mergeEntry is one merge: the two tokens to join.
type mergeEntry [2]string

// component is the union of the normalizer, pre-tokenizer, post-processor
// and decoder fields used by the supported types.
type component struct {
	Type          string       `json:"type"`
	Normalizers   []*component `json:"normalizers"`
	Pretokenizers []*component `json:"pretokenizers"`
	Processors    []*component `json:"processors"`
	Decoders      []*component `json:"decoders"`
	Pattern       *struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	} `json:"pattern"`
	Content        string `json:"content"`
	Prepend        string `json:"prepend"`
	Behavior       string `json:"behavior"`
	Invert         bool   `json:"invert"`
	AddPrefixSpace *bool  `json:"add_prefix_space"`
	UseRegex       *bool  `json:"use_regex"`
	Replacement    string `json:"replacement"`
	PrependScheme  string `json:"prepend_scheme"`
	Split          *bool  `json:"split"`
	Start          int    `json:"start"`
	Stop           int    `json:"stop"`
	Single         []map[string]struct {
		ID string `json:"id"`
	} `json:"single"`
	SpecialTokens map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`
}

// fieldError names the unsupported or malformed field of a file.
func fieldError(path, field, format string, args ...any) error {
	return fmt.Errorf("tokenizer: %s: %s: %s", path, field, fmt.Sprintf(format, args...))
}

// Load reads a tokenizer.json. Special ids come from the file alone (BOS
// from the post-processor template); use LoadDir to take them from the
// model directory's config files.
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: invalid JSON: %w", path, err)
	}
	t := &Tokenizer{path: path}
	if err := t.build(&f); err != nil {
		return nil, err
	}
	t.special = t.templateSpecial()
	return t, nil
}

func (t *Tokenizer) build(f *fileJSON) error {
	p := t.path
	model, vocab, err := buildBPE(p, f.Model)
	if err != nil {
		return err
	}
	t.model = model
	if err := t.buildAdded(p, f, vocab); err != nil {
		return err
	}
	if t.normalizers, err = buildNormalizer(p, "normalizer", f.Normalizer); err != nil {
		return err
	}
	if t.splitters, model.byteLevel, err = buildPreTokenizer(p, "pre_tokenizer", f.PreTokenizer); err != nil {
		return err
	}
	model.init()
	if t.post, err = buildPostProcessor(p, "post_processor", f.PostProcessor); err != nil {
		return err
	}
	addedSet := make(map[string]bool, len(t.added))
	for _, a := range t.added {
		addedSet[a.Content] = true
	}
	if t.decoder, err = buildDecoder(p, "decoder", f.Decoder, addedSet); err != nil {
		return err
	}
	return nil
}

// buildBPE checks the BPE model of a tokenizer file and indexes its
// vocabulary and merges.
func buildBPE(p string, m *modelJSON) (*bpe, map[string]int, error) {
	if m == nil {
		return nil, nil, fieldError(p, "model", "missing")
	}
	if m.Type == "" && m.Merges != nil {
		m.Type = "BPE" // HF infers an untagged model from its fields
	}
	if m.Type != "BPE" {
		return nil, nil, fieldError(p, "model.type", "unsupported model type %q (only BPE is supported)", m.Type)
	}
	if m.Dropout != nil && *m.Dropout != 0 {
		return nil, nil, fieldError(p, "model.dropout", "BPE dropout is not supported")
	}
	if m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "" {
		return nil, nil, fieldError(p, "model.continuing_subword_prefix", "not supported")
	}
	if m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "" {
		return nil, nil, fieldError(p, "model.end_of_word_suffix", "not supported")
	}
	if m.Vocab == nil {
		return nil, nil, fieldError(p, "model.vocab", "missing")
	}
	vocab, err := parseVocab(m.Vocab)
	if err != nil {
		return nil, nil, fieldError(p, "model.vocab", "%v", err)
	}
	var merges []mergeEntry
	if m.Merges != nil {
		if merges, err = parseMerges(m.Merges); err != nil {
			return nil, nil, fieldError(p, "model.merges", "%v", err)
		}
	}
	model := &bpe{vocab: vocab, unk: -1, fuseUnk: m.FuseUnk, byteFallback: m.ByteFallback, ignoreMerges: m.IgnoreMerges}
	if m.UnkToken != nil {
		id, ok := vocab[*m.UnkToken]
		if !ok {
			return nil, nil, fieldError(p, "model.unk_token", "%q is not in model.vocab", *m.UnkToken)
		}
		model.unk = id
	}
	model.merges = make(map[uint64]mergeInfo, len(merges))
	var joined []byte
	for rank, mg := range merges {
		a, okA := vocab[mg[0]]
		b, okB := vocab[mg[1]]
		joined = append(append(joined[:0], mg[0]...), mg[1]...)
		c, okC := vocab[string(joined)] // no allocation for a map index
		if !okA || !okB || !okC {
			return nil, nil, fieldError(p, fmt.Sprintf("model.merges[%d]", rank), "merge %q %q uses a token missing from model.vocab", mg[0], mg[1])
		}
		key := pairKey(int32(a), int32(b))
		if _, dup := model.merges[key]; !dup { // the first (lowest rank) wins
			model.merges[key] = mergeInfo{rank: int32(rank), id: int32(c)}
		}
	}
	return model, vocab, nil
}

// buildAdded indexes the added tokens and the id → token table.
func (t *Tokenizer) buildAdded(p string, f *fileJSON, vocab map[string]int) error {
	// Vocabulary plus added tokens, by id.
	t.addedIDs = make(map[string]int, len(f.AddedTokens))
	maxID := -1
	for _, id := range vocab {
		maxID = max(maxID, id)
	}
	t.addedByID = make(map[int]AddedToken, len(f.AddedTokens))
	var raw, norm []AddedToken
	for i, a := range f.AddedTokens {
		if a.ID < 0 || a.Content == "" {
			return fieldError(p, fmt.Sprintf("added_tokens[%d]", i), "needs a non-negative id and non-empty content")
		}
		at := AddedToken{ID: a.ID, Content: a.Content, Special: a.Special, LStrip: a.LStrip, RStrip: a.RStrip, Normalized: a.Normalized, SingleWord: a.SingleWord}
		t.added = append(t.added, at)
		t.addedByID[a.ID] = at
		t.addedIDs[a.Content] = a.ID
		maxID = max(maxID, a.ID)
		if a.Normalized && f.Normalizer != nil {
			norm = append(norm, at)
		} else {
			raw = append(raw, at)
		}
	}
	// Ids index a dense table (and a model's embedding rows): reject a
	// corrupt file rather than allocate gigabytes for it.
	if maxID >= 1<<24 {
		return fieldError(p, "model.vocab", "token id %d is implausibly large", maxID)
	}
	t.idToToken = make([]string, maxID+1)
	t.hasID = make([]bool, maxID+1)
	for tok, id := range vocab {
		t.idToToken[id], t.hasID[id] = tok, true
	}
	for _, a := range t.added {
		t.idToToken[a.ID], t.hasID[a.ID] = a.Content, true
	}
	// A normalized added token is looked for in the normalized text; with
	// no normalizer the two texts are the same.
	t.rawAdded, t.normAdded = newMatcher(raw), newMatcher(norm)

	return nil
}

func buildNormalizer(p, field string, c *component) ([]func(string) string, error) {
	if c == nil {
		return nil, nil
	}
	switch c.Type {
	case "Sequence":
		var out []func(string) string
		for i, sub := range c.Normalizers {
			fs, err := buildNormalizer(p, fmt.Sprintf("%s.normalizers[%d]", field, i), sub)
			if err != nil {
				return nil, err
			}
			out = append(out, fs...)
		}
		return out, nil
	case "Prepend":
		pre := c.Prepend
		return []func(string) string{func(s string) string {
			if s == "" {
				return s // HF prepends only to non-empty text
			}
			return pre + s
		}}, nil
	case "Replace":
		if c.Pattern == nil || c.Pattern.String == nil {
			return nil, fieldError(p, field+".pattern", "only String patterns are supported in Replace")
		}
		old, repl := *c.Pattern.String, c.Content
		return []func(string) string{func(s string) string { return strings.ReplaceAll(s, old, repl) }}, nil
	}
	return nil, fieldError(p, field+".type", "unsupported normalizer %q", c.Type)
}

// buildPreTokenizer returns the splitting steps and whether a ByteLevel
// step maps words to bytes (it must come last; the model then works on
// bytes).
func buildPreTokenizer(p, field string, c *component) ([]splitter, bool, error) {
	if c == nil {
		return nil, false, nil
	}
	switch c.Type {
	case "Sequence":
		var out []splitter
		byteLevel := false
		for i, sub := range c.Pretokenizers {
			f := fmt.Sprintf("%s.pretokenizers[%d]", field, i)
			if byteLevel {
				return nil, false, fieldError(p, f, "pre-tokenizers after ByteLevel are not supported")
			}
			ss, bl, err := buildPreTokenizer(p, f, sub)
			if err != nil {
				return nil, false, err
			}
			out, byteLevel = append(out, ss...), bl
		}
		return out, byteLevel, nil
	case "Split":
		if c.Pattern == nil || c.Pattern.Regex == nil {
			return nil, false, fieldError(p, field+".pattern", "only the Llama 3 Regex pattern is supported in Split")
		}
		var sp regexSplitter
		switch *c.Pattern.Regex {
		case llama3Pattern:
			sp.maxDigits = 3
		case qwen2Pattern:
			sp.maxDigits = 1
		default:
			return nil, false, fieldError(p, field+".pattern.Regex", "unsupported Split regex %q (only the Llama 3 pattern is implemented)", *c.Pattern.Regex)
		}
		// The pattern matches every character, so keeping the matches as
		// words (Isolated) and removing what lies between them (Removed
		// with invert, as converted GPT-4 tokenizers write it) split alike.
		if !(c.Behavior == "Isolated" && !c.Invert) && !(c.Behavior == "Removed" && c.Invert) {
			return nil, false, fieldError(p, field+".behavior", "unsupported Split behavior %q (invert %v); want Isolated, or Removed with invert", c.Behavior, c.Invert)
		}
		return []splitter{sp}, false, nil
	case "ByteLevel":
		if c.UseRegex == nil || *c.UseRegex {
			return nil, false, fieldError(p, field+".use_regex", "ByteLevel with use_regex=true (GPT-2 regex) is not supported")
		}
		if c.AddPrefixSpace != nil && *c.AddPrefixSpace {
			return []splitter{prefixSpace{}}, true, nil
		}
		return nil, true, nil
	case "Metaspace":
		ms := metaspace{repl: c.Replacement, prepend: c.PrependScheme, splitWords: c.Split == nil || *c.Split}
		if ms.repl == "" {
			ms.repl = "\u2581"
		}
		if ms.prepend == "" { // files older than prepend_scheme
			ms.prepend = "always"
			if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
				ms.prepend = "never"
			}
		}
		if ms.prepend != "always" && ms.prepend != "first" && ms.prepend != "never" {
			return nil, false, fieldError(p, field+".prepend_scheme", "unknown value %q", ms.prepend)
		}
		return []splitter{ms}, false, nil
	}
	return nil, false, fieldError(p, field+".type", "unsupported pre-tokenizer %q", c.Type)
}

// prefixSpace is ByteLevel's add_prefix_space: HF prepends a space to each
// word that does not start with one.
type prefixSpace struct{}

func (prefixSpace) split(s string, _ bool, emit func(string)) {
	if !strings.HasPrefix(s, " ") {
		s = " " + s
	}
	emit(s)
}

func buildPostProcessor(p, field string, c *component) (*template, error) {
	if c == nil {
		return nil, nil
	}
	switch c.Type {
	case "ByteLevel":
		return nil, nil // only adjusts offsets, which this package does not report
	case "Sequence":
		var out *template
		for i, sub := range c.Processors {
			tp, err := buildPostProcessor(p, fmt.Sprintf("%s.processors[%d]", field, i), sub)
			if err != nil {
				return nil, err
			}
			if tp == nil {
				continue
			}
			if out == nil {
				out = &template{}
			}
			// A later processor wraps the output of an earlier one.
			out.before = append(append([]int(nil), tp.before...), out.before...)
			out.after = append(out.after, tp.after...)
		}
		return out, nil
	case "TemplateProcessing":
		tp := &template{}
		seen := false
		for i, item := range c.Single {
			f := fmt.Sprintf("%s.single[%d]", field, i)
			if seq, ok := item["Sequence"]; ok {
				if seq.ID != "A" || seen {
					return nil, fieldError(p, f, "single template needs exactly one Sequence A")
				}
				seen = true
				continue
			}
			st, ok := item["SpecialToken"]
			if !ok {
				return nil, fieldError(p, f, "expected SpecialToken or Sequence")
			}
			spec, ok := c.SpecialTokens[st.ID]
			if !ok {
				return nil, fieldError(p, field+".special_tokens", "%q is not defined", st.ID)
			}
			if seen {
				tp.after = append(tp.after, spec.IDs...)
			} else {
				tp.before = append(tp.before, spec.IDs...)
			}
		}
		if !seen {
			return nil, fieldError(p, field+".single", "single template has no Sequence A")
		}
		return tp, nil
	}
	return nil, fieldError(p, field+".type", "unsupported post-processor %q", c.Type)
}

func buildDecoder(p, field string, c *component, added map[string]bool) (decoder, error) {
	if c == nil {
		return nil, nil
	}
	switch c.Type {
	case "Sequence":
		var seq sequenceDecoder
		for i, sub := range c.Decoders {
			d, err := buildDecoder(p, fmt.Sprintf("%s.decoders[%d]", field, i), sub, added)
			if err != nil {
				return nil, err
			}
			if d != nil {
				seq = append(seq, d)
			}
		}
		return seq, nil
	case "ByteLevel":
		return byteLevelDecoder{added: added}, nil
	case "Replace":
		if c.Pattern == nil || c.Pattern.String == nil {
			return nil, fieldError(p, field+".pattern", "only String patterns are supported in Replace")
		}
		return replaceDecoder{old: *c.Pattern.String, new: c.Content}, nil
	case "ByteFallback":
		return byteFallbackDecoder{}, nil
	case "Fuse":
		return fuseDecoder{}, nil
	case "Strip":
		return stripDecoder{content: c.Content, start: c.Start, stop: c.Stop}, nil
	case "Metaspace":
		d := metaspaceDecoder{repl: c.Replacement, stripFirst: c.PrependScheme != "never"}
		if d.repl == "" {
			d.repl = "\u2581"
		}
		if c.PrependScheme == "" && c.AddPrefixSpace != nil {
			d.stripFirst = *c.AddPrefixSpace
		}
		return d, nil
	}
	return nil, fieldError(p, field+".type", "unsupported decoder %q", c.Type)
}
