package dataset

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"hone/chattemplate"
)

// FuzzParseRecord feeds arbitrary lines to the chat and instruct record
// parsers: never a panic, every problem names the file, line, rule and what
// is wrong, and a line accepted without problems is one that
// encoding/json decodes strictly (no unknown keys) to the same record,
// shaped as the rules say.
func FuzzParseRecord(f *testing.F) {
	for _, path := range []string{"../examples/chat/train.jsonl", "../examples/chat/eval.jsonl"} {
		fh, err := os.Open(path)
		if err != nil {
			f.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for i := 0; i < 5 && sc.Scan(); i++ {
			f.Add(bytes.Clone(sc.Bytes()))
		}
		fh.Close()
	}
	for _, s := range []string{`{"prompt":"2+2?","response":"4"}`, `{"prompt":"a","completion":"b"}`, `{"prompt":"a","response":"b","completion":"c"}`,
		`{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}`,
		`{"messages":[]}`, `{"messages":{}}`, `[1,2]`, `{"messages":[{"role":"tool","content":"x"}]}`, `{"messages":[{"role":"user","content":" "}]}`,
		"{\"prompt\":\"\xff\",\"response\":\"b\"}", `{"messages":[{"role":"user","content":"u","extra":1},{"role":"assistant","content":null}]}`,
		`{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}],"messages":[]}`, `{"Prompt":"a","response":"b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, probs := parseChat("data.jsonl", 7, b)
		checkWhere(t, b, probs)
		if len(probs) == 0 {
			var want struct {
				Messages []chattemplate.Message `json:"messages"`
			}
			strictDecode(t, b, &want)
			if !slices.Equal(want.Messages, rec.msgs) {
				t.Fatalf("parseChat(%q) = %q; encoding/json reads %q", b, rec.msgs, want.Messages)
			}
			checkConversation(t, b, rec.msgs)
		}
		rec, probs = parseInstruct("data.jsonl", 7, b)
		checkWhere(t, b, probs)
		if len(probs) == 0 {
			var want struct {
				Prompt     string  `json:"prompt"`
				Response   *string `json:"response"`
				Completion *string `json:"completion"`
			}
			strictDecode(t, b, &want)
			resp := want.Response
			if resp == nil {
				resp = want.Completion
			}
			if resp == nil || want.Response != nil && want.Completion != nil || want.Prompt != rec.prompt || *resp != rec.response ||
				strings.TrimSpace(rec.prompt) == "" || strings.TrimSpace(rec.response) == "" {
				t.Fatalf("parseInstruct(%q) accepted %+v; encoding/json reads %+v", b, rec, want)
			}
		}
	})
}

func checkWhere(t *testing.T, line []byte, probs []Problem) {
	t.Helper()
	for _, p := range probs {
		if p.File != "data.jsonl" || p.Line != 7 || p.Rule == "" || p.Message == "" {
			t.Fatalf("line %q: problem %+v does not say where and what", line, p)
		}
	}
}

func strictDecode(t *testing.T, line []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("accepted %q, which encoding/json rejects: %v", line, err)
	}
	if _, err := dec.Token(); err == nil {
		t.Fatalf("accepted %q, which has data after its object", line)
	}
}

// checkConversation applies the chat rules: an optional leading system
// message, then user and assistant alternating, ending on the assistant,
// no empty content.
func checkConversation(t *testing.T, line []byte, msgs []chattemplate.Message) {
	t.Helper()
	rest := msgs
	if len(rest) > 0 && rest[0].Role == "system" {
		rest = rest[1:]
	}
	ok := len(rest) >= 2 && len(rest)%2 == 0
	for i, m := range rest {
		want := "user"
		if i%2 == 1 {
			want = "assistant"
		}
		ok = ok && m.Role == want
	}
	for _, m := range msgs {
		ok = ok && strings.TrimSpace(m.Content) != ""
	}
	if !ok {
		t.Fatalf("parseChat accepted %q: %q breaks the chat rules", line, msgs)
	}
}
