package chattemplate

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hone/internal/testassets"
)

func copyConfig(t *testing.T, asset string) string {
	t.Helper()
	data, err := os.ReadFile(testassets.Path(t, asset))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestFromModelDirLlama3(t *testing.T) {
	tmpl, err := FromModelDir(copyConfig(t, "tokenizer-llama3_1/package/models/tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.BOSToken() != "<|begin_of_text|>" || tmpl.EOSToken() != "<|eot_id|>" {
		t.Fatalf("tokens = %q, %q", tmpl.BOSToken(), tmpl.EOSToken())
	}
	got, err := tmpl.Render([]Message{
		{Role: "system", Content: "You are terse."},
		{Role: "user", Content: " Hi there \n"},
		{Role: "assistant", Content: "Hello."},
	}, Options{AddGenerationPrompt: true})
	if err != nil {
		t.Fatal(err)
	}
	want := "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>" +
		"<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>" +
		"<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>" +
		"<|start_header_id|>assistant<|end_header_id|>\n\n"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

func TestFromModelDirNoTemplate(t *testing.T) {
	dir := copyConfig(t, "tokenizer-llama2/package/models/tokenizer_config.json")
	_, err := FromModelDir(dir)
	if !errors.Is(err, ErrNoTemplate) {
		t.Fatalf("err = %v, want ErrNoTemplate", err)
	}
	if !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "base model") {
		t.Fatalf("error lacks path or hint: %v", err)
	}
}

func TestFromModelDirListFormAndAddedTokens(t *testing.T) {
	dir := t.TempDir()
	cfg := map[string]any{
		"bos_token": map[string]any{"content": "<s>", "lstrip": false},
		"eos_token": "</s>",
		"chat_template": []map[string]string{
			{"name": "tool_use", "template": "TOOLS"},
			{"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}"},
		},
	}
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tmpl, err := FromModelDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tmpl.Render([]Message{{Role: "user", Content: "x"}}, Options{})
	if err != nil || got != "<s>x</s>" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// findTemplate returns the fixture template whose names include name.
func findTemplate(t *testing.T, name string) string {
	t.Helper()
	for _, tf := range loadFixtures(t).Templates {
		for _, n := range tf.Names {
			if n == name {
				return tf.Template
			}
		}
	}
	t.Fatalf("no fixture template %s", name)
	return ""
}

func TestRaiseExceptionSurfaces(t *testing.T) {
	tmpl, err := Parse(findTemplate(t, "ollama:library/mistral:7b-instruct-fp16"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = tmpl.Render([]Message{
		{Role: "system", Content: "sys"},
		{Role: "user", Content: "hi"},
	}, Options{BOSToken: "<s>", EOSToken: "</s>"})
	var re *RaiseError
	if !errors.As(err, &re) || re.Message != "Conversation roles must alternate user/assistant/user/assistant/..." {
		t.Fatalf("err = %v, want the template's raise_exception message", err)
	}
}

func TestParseErrorNamesPosition(t *testing.T) {
	_, err := Parse("line one\n{% if x %}\n{{ y }}\n{% for %}")
	if err == nil || !strings.Contains(err.Error(), "line") {
		t.Fatalf("err = %v, want a line number", err)
	}
}

func TestToolsMapMatchesSortedJSON(t *testing.T) {
	tmpl, err := Parse("{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}")
	if err != nil {
		t.Fatal(err)
	}
	tools := []map[string]any{{"type": "function", "function": map[string]any{"name": "f", "w": 1.0, "n": 2}}}
	a, err := tmpl.Render(nil, Options{Tools: tools})
	if err != nil {
		t.Fatal(err)
	}
	b, err := tmpl.Render(nil, Options{ToolsJSON: json.RawMessage(`[{"function": {"n": 2, "name": "f", "w": 1.0}, "type": "function"}]`)})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"function": {"n": 2, "name": "f", "w": 1.0}, "type": "function"}]|{
  "function": {
    "n": 2,
    "name": "f",
    "w": 1.0
  },
  "type": "function"
}`
	if a != want || b != want {
		t.Fatalf("got\n%s\n%s\nwant\n%s", a, b, want)
	}
	// ToolsJSON keeps document order, as Python's json.loads does.
	c, _ := tmpl.Render(nil, Options{ToolsJSON: json.RawMessage(`[{"type": "function", "z": null, "a": "é\u2028"}]`)})
	if !strings.HasPrefix(c, `[{"type": "function", "z": null, "a": "é`+"\u2028"+`"}]`) {
		t.Fatalf("order/escaping not kept: %s", c)
	}
}

func TestStrftimeNow(t *testing.T) {
	tmpl, err := Parse(`{{ strftime_now("%d %b %Y") }} {{ strftime_now("%Y-%m-%d %-d %A %%Y") }}`)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 6, 9, 0, 0, 0, time.UTC)
	got, err := tmpl.Render(nil, Options{Now: func() time.Time { return now }})
	if err != nil || got != "06 Nov 2026 2026-11-06 6 Friday %Y" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestConcurrentRender(t *testing.T) {
	tmpl, err := Parse(findTemplate(t, "ollama:library/llama3.1:8b"))
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{Role: "user", Content: "hi"}}
	opt := Options{AddGenerationPrompt: true, BOSToken: "<|begin_of_text|>",
		Now: func() time.Time { return time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC) }}
	want, err := tmpl.Render(msgs, opt)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if got, err := tmpl.Render(msgs, opt); err != nil || got != want {
					t.Errorf("concurrent render differs: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestPrintingLikeJinja2 pins output Python Jinja2 3.1 gives for values the
// engine prints differently on its own.
func TestPrintingLikeJinja2(t *testing.T) {
	for src, want := range map[string]string{
		"{{ none }}|{{ x }}":             "None|None",
		"{{ 1.0 }}|{{ 3/2 }}":            "1.0|1.5",
		`{{ {'a':"it's"} }}`:             `{'a': "it's"}`,
		`{{ "a" ~ 1 }}`:                  "a1",
		"{{ 'abc'['text'] is defined }}": "False",
	} {
		tm, err := Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tm.Render(nil, Options{Extra: map[string]any{"x": nil}})
		if err != nil || got != want {
			t.Errorf("%s: got %q (%v), want %q", src, got, err, want)
		}
	}
	// Jinja2 raises on undefined + str; the engine alone would concatenate.
	tm, _ := Parse("{{ missing + 'x' }}")
	if _, err := tm.Render(nil, Options{}); err == nil {
		t.Error("undefined + str rendered; Jinja2 raises")
	}
}
