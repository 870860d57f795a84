package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadDir loads a model directory: tokenizer.json, plus tokenizer_config.json
// and, when present, config.json and generation_config.json, which fill
// Special (BOS/EOS/PAD tokens, add_bos_token, every eos_token_id).
func LoadDir(dir string) (*Tokenizer, error) {
	t, err := Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	var tc tokenizerConfig
	tcPath := filepath.Join(dir, "tokenizer_config.json")
	if err := readJSON(tcPath, &tc, true); err != nil {
		return nil, err
	}
	var cfg, gen modelConfig
	if err := readJSON(filepath.Join(dir, "config.json"), &cfg, false); err != nil {
		return nil, err
	}
	if err := readJSON(filepath.Join(dir, "generation_config.json"), &gen, false); err != nil {
		return nil, err
	}
	s := t.special
	lookup := func(field string, tok *tokenValue) (int, error) {
		id, ok := t.TokenID(tok.content)
		if !ok {
			return -1, fmt.Errorf("tokenizer: %s: %s: %q is not a token of %s", tcPath, field, tok.content, t.path)
		}
		return id, nil
	}
	// BOS: tokenizer_config wins, then the model configs, then the template.
	if tc.BOS != nil {
		if s.BOS, err = lookup("bos_token", tc.BOS); err != nil {
			return nil, err
		}
	} else if ids := append(gen.BOS, cfg.BOS...); len(ids) > 0 {
		s.BOS = ids[0]
	}
	if tc.EOS != nil {
		if s.EOS, err = lookup("eos_token", tc.EOS); err != nil {
			return nil, err
		}
	} else if ids := append(gen.EOS, cfg.EOS...); len(ids) > 0 {
		s.EOS = ids[0]
	}
	if tc.PAD != nil {
		if s.PAD, err = lookup("pad_token", tc.PAD); err != nil {
			return nil, err
		}
	} else if ids := append(gen.PAD, cfg.PAD...); len(ids) > 0 {
		s.PAD = ids[0]
	}
	s.EOSIDs = nil
	for _, id := range append(append([]int{s.EOS}, gen.EOS...), cfg.EOS...) {
		if id >= 0 && !containsInt(s.EOSIDs, id) {
			s.EOSIDs = append(s.EOSIDs, id)
		}
	}
	if tc.AddBOS != nil {
		s.AddBOS = *tc.AddBOS
	} else {
		s.AddBOS = t.post != nil && len(t.post.before) > 0 && t.post.before[0] == s.BOS
	}
	s.BOSToken, _ = t.Token(s.BOS)
	s.EOSToken, _ = t.Token(s.EOS)
	t.special = s
	return t, nil
}

// templateSpecial derives Special from tokenizer.json alone: BOS is the
// first token the post-processor puts before the text, EOS the last one it
// puts after it (Llama adds none, so EOS stays -1 without LoadDir).
func (t *Tokenizer) templateSpecial() Special {
	s := Special{BOS: -1, EOS: -1, PAD: -1}
	if t.post != nil && len(t.post.before) > 0 {
		s.BOS = t.post.before[0]
		s.AddBOS = true
	}
	if t.post != nil && len(t.post.after) > 0 {
		s.EOS = t.post.after[len(t.post.after)-1]
		s.EOSIDs = []int{s.EOS}
	}
	s.BOSToken, _ = t.Token(s.BOS)
	s.EOSToken, _ = t.Token(s.EOS)
	return s
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// tokenizerConfig is the part of tokenizer_config.json used here.
type tokenizerConfig struct {
	BOS    *tokenValue `json:"bos_token"`
	EOS    *tokenValue `json:"eos_token"`
	PAD    *tokenValue `json:"pad_token"`
	AddBOS *bool       `json:"add_bos_token"`
}

// tokenValue is a special token written as a string or as an AddedToken
// object ({"content": ...}); null leaves the *tokenValue nil.
type tokenValue struct{ content string }

func (v *tokenValue) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &v.content); err == nil {
		return nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf("want a string or an object with content, got %s", b)
	}
	v.content = obj.Content
	return nil
}

// modelConfig is the part of config.json / generation_config.json used here.
type modelConfig struct {
	BOS idList `json:"bos_token_id"`
	EOS idList `json:"eos_token_id"`
	PAD idList `json:"pad_token_id"`
}

// idList is a token id field written as an int, a list of ints, or null.
type idList []int

func (l *idList) UnmarshalJSON(b []byte) error {
	var one *int
	if err := json.Unmarshal(b, &one); err == nil {
		if one != nil {
			*l = idList{*one}
		}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want an int or a list of ints, got %s", b)
	}
	*l = many
	return nil
}

// readJSON decodes path into v; a missing file is an error only if required.
func readJSON(path string, v any, required bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if !required && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("tokenizer: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("tokenizer: %s: invalid JSON: %w", path, err)
	}
	return nil
}
