package chattemplate

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzRender renders arbitrary conversations with each of the 97 real chat
// templates in testdata/renders.json: never a panic (a template may refuse a
// conversation with an error, e.g. raise_exception on role order), and the
// Llama 3.1 template, which accepts any alternating conversation, renders
// every message's content.
func FuzzRender(f *testing.F) {
	fx := loadFixtures(f)
	var tmpls []*Template
	llama31 := -1
	for _, tf := range fx.Templates {
		t, err := Parse(tf.Template)
		if err != nil {
			continue
		}
		t.bos, t.eos = tf.BOSToken, tf.EOSToken
		if tf.Names[0] == "ollama:library/llama3.1:8b" {
			llama31 = len(tmpls)
		}
		tmpls = append(tmpls, t)
	}
	if llama31 < 0 || len(tmpls) < 90 {
		f.Fatalf("fixtures: %d templates parsed, Llama 3.1 at %d", len(tmpls), llama31)
	}
	for i := range tmpls {
		f.Add(uint8(i), "You are terse.", "Hi {{ there }} {% raw %}", "Hello! <|eot_id|>\n", uint8(0), true)
	}
	f.Add(uint8(llama31), "", "ünï 😀 \x00 \\u0000 \"quoted\" ", "  spaced  ", uint8(3), false)
	f.Fuzz(func(t *testing.T, which uint8, system, user, assistant string, shape uint8, gen bool) {
		tmpl := tmpls[int(which)%len(tmpls)]
		var msgs []Message
		if shape&1 != 0 && system != "" {
			msgs = append(msgs, Message{Role: "system", Content: system})
		}
		for range 1 + int(shape>>1&3) {
			msgs = append(msgs, Message{Role: "user", Content: user}, Message{Role: "assistant", Content: assistant})
		}
		if shape&8 != 0 {
			msgs = msgs[:len(msgs)-1] // end on a user turn
		}
		out, err := tmpl.Render(msgs, Options{AddGenerationPrompt: gen, Now: func() time.Time { return time.Unix(0, 0) }})
		if errors.Is(err, errEnginePanic) {
			t.Fatalf("template %d: %v", int(which)%len(tmpls), err)
		}
		if tmpl != tmpls[llama31] {
			return
		}
		if err != nil {
			t.Fatalf("Llama 3.1: Render(%q) = %v", msgs, err)
		}
		for _, m := range msgs {
			// The template trims content (Python's str.strip).
			if c := strings.TrimFunc(m.Content, pythonIsSpace); !strings.Contains(out, c) {
				t.Fatalf("Llama 3.1: Render(%q) lacks %q:\n%s", msgs, c, out)
			}
		}
	})
}

// pythonIsSpace is Python's str.isspace for one character.
func pythonIsSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0x1c, 0x1d, 0x1e, 0x1f, 0x85, 0xa0, 0x1680, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000:
		return true
	}
	return r >= 0x2000 && r <= 0x200a
}
