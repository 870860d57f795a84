package dataset

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/chattemplate"
)

type wantProblem struct {
	line  int
	field string
	rule  string
}

func checkProblems(t *testing.T, r *Report, file string, want []wantProblem) {
	t.Helper()
	var got []string
	for _, p := range r.Problems {
		got = append(got, fmt.Sprintf("%s:%d %s %s", filepath.Base(p.File), p.Line, p.Field, p.Rule))
	}
	var exp []string
	for _, w := range want {
		exp = append(exp, fmt.Sprintf("%s:%d %s %s", filepath.Base(file), w.line, w.field, w.rule))
	}
	if strings.Join(got, "\n") != strings.Join(exp, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(exp, "\n"))
	}
	if r.ProblemCount != len(want) || r.OK() != (len(want) == 0) {
		t.Fatalf("ProblemCount %d, want %d", r.ProblemCount, len(want))
	}
}

func TestValidateChatProblems(t *testing.T) {
	good := `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}`
	lines := []string{
		good, // 1
		`{"messages":[{"role":"user","content":"hi"}`,                                             // 2 malformed JSON
		`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"x"}],"id":3}`, // 3 extra key
		`{"conversation":[]}`, // 4 missing + extra key
		`{"messages":[{"role":"user","content":"hi"},{"role":"assistant"}]}`,                                               // 5 missing content
		`{"messages":[{"role":"user","content":"hi","name":"bob"},{"role":"assistant","content":"x"}]}`,                    // 6 extra message key
		`{"messages":[{"role":"user","content":"hi"},{"role":"user","content":"again"}]}`,                                  // 7 order
		`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"x"},{"role":"system","content":"s"}]}`, // 8 system late
		`{"messages":[{"role":"assistant","content":"x"}]}`,                                                                // 9 starts with assistant
		`{"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}]}`,                                    // 10 no assistant
		`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"x"},{"role":"user","content":"y"}]}`,   // 11 last user
		`{"messages":[{"role":"user","content":""},{"role":"assistant","content":"  "}]}`,                                  // 12 empty contents
		`{"messages":[{"role":"user","content":["a"]},{"role":"assistant","content":7}]}`,                                  // 13 non-string content
		`{"messages":[{"role":"tool","content":"x"},{"role":"assistant","content":"y"}]}`,                                  // 14 bad role
		"{\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9\"},{\"role\":\"assistant\",\"content\":\"x\"}]}",          // 15 invalid UTF-8
		`[1,2]`,             // 16 not an object
		``,                  // 17 blank: skipped
		`{"messages":"hi"}`, // 18 messages not an array
		`{"messages":[]}`,   // 19 empty
		good,                // 20
	}
	dir := t.TempDir()
	data := writeFile(t, dir, "chat.jsonl", strings.Join(lines, "\n")+"\n")
	r, err := Validate(context.Background(), modelDir(t, nil), Chat, data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkProblems(t, r, data, []wantProblem{
		{2, "", RuleInvalidJSON},
		{3, "id", RuleExtraKey},
		{4, "messages", RuleMissingKey},
		{4, "conversation", RuleExtraKey},
		{5, "messages[1].content", RuleMissingKey},
		{6, "messages[0].name", RuleExtraKey},
		{7, "messages[1].role", RuleRoleOrder},
		{8, "messages[2].role", RuleRoleOrder},
		{9, "messages[0].role", RuleRoleOrder},
		{10, "messages", RuleNoAssistant},
		{11, "messages[2].role", RuleLastAssistant},
		{12, "messages[0].content", RuleEmptyContent},
		{12, "messages[1].content", RuleEmptyContent},
		{13, "messages[0].content", RuleWrongType},
		{13, "messages[1].content", RuleWrongType},
		{14, "messages[0].role", RuleInvalidRole},
		{15, "", RuleInvalidUTF8},
		{16, "", RuleWrongType},
		{18, "messages", RuleWrongType},
		{19, "messages", RuleNoAssistant},
	})
	if r.Stats.Examples != 2 {
		t.Fatalf("examples %d, want 2", r.Stats.Examples)
	}
	var sb strings.Builder
	r.WriteText(&sb)
	if !strings.Contains(sb.String(), "chat.jsonl:2: not valid JSON") {
		t.Fatalf("text report lacks file:line:\n%s", sb.String())
	}
	t.Logf("report:\n%s", sb.String())
}

func TestValidateInstructProblems(t *testing.T) {
	lines := []string{
		`{"prompt":"a","response":"b"}`,
		`{"prompt":"a","completion":"b"}`,
		`{"prompt":"a","response":"b","completion":"c"}`,
		`{"prompt":"a"}`,
		`{"prompt":"a","response":"b","extra":1}`,
		`{"prompt":1,"response":""}`,
		`{"prompt":"a","response":"b"`,
	}
	dir := t.TempDir()
	data := writeFile(t, dir, "inst.jsonl", strings.Join(lines, "\n"))
	r, err := Validate(context.Background(), modelDir(t, nil), Instruct, data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkProblems(t, r, data, []wantProblem{
		{3, "completion", RuleExtraKey},
		{4, "response", RuleMissingKey},
		{5, "extra", RuleExtraKey},
		{6, "prompt", RuleWrongType},
		{6, "response", RuleEmptyContent},
		{7, "", RuleInvalidJSON},
	})
}

func TestValidateEmptyAndFolder(t *testing.T) {
	dir := t.TempDir()
	empty := writeFile(t, dir, "a.jsonl", "\n\n")
	writeFile(t, dir, "b.jsonl", `{"prompt":"a","response":"b"}`+"\n")
	writeFile(t, dir, "notes.md", "ignored")
	r, err := Validate(context.Background(), modelDir(t, nil), Instruct, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkProblems(t, r, empty, []wantProblem{{0, "", RuleEmptyFile}})
	if r.Files != 2 || r.Stats.Examples != 1 {
		t.Fatalf("files %d examples %d", r.Files, r.Stats.Examples)
	}
	r, err = Validate(context.Background(), modelDir(t, nil), CPT, t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.ProblemCount != 1 || r.Problems[0].Rule != RuleNoFiles {
		t.Fatalf("problems %+v", r.Problems)
	}
}

func TestValidateCPTProblems(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.txt", "A fine document.\nSecond line.\n")
	bad := writeFile(t, dir, "b.txt", "line one\nline two\nline thr\xff\xfeee\n")
	empty := writeFile(t, dir, "c.txt", "")
	r, err := Validate(context.Background(), modelDir(t, nil), CPT, dir, Options{ContextLength: 16})
	if err != nil {
		t.Fatal(err)
	}
	if r.ProblemCount != 2 {
		t.Fatalf("problems %+v", r.Problems)
	}
	if p := r.Problems[0]; p.File != bad || p.Line != 3 || p.Rule != RuleInvalidUTF8 {
		t.Fatalf("problem %+v", p)
	}
	if p := r.Problems[1]; p.File != empty || p.Rule != RuleEmptyFile {
		t.Fatalf("problem %+v", p)
	}
	if r.Stats.Examples != 1 || len(r.Warnings) == 0 || !strings.Contains(r.Warnings[0], "1500000") {
		t.Fatalf("stats %+v warnings %q", r.Stats, r.Warnings)
	}
}

func TestValidateOverlong(t *testing.T) {
	m := loadTestModel(t, nil)
	var lines []string
	long, short := 0, 0
	for i := range 30 {
		words := 3 + 7*i
		body := strings.Repeat("word ", words)
		lines = append(lines, fmt.Sprintf(`{"messages":[{"role":"user","content":"q%d"},{"role":"assistant","content":%q}]}`, i, body))
		e, err := m.encodeChat([]chattemplate.Message{{Role: "user", Content: fmt.Sprintf("q%d", i)}, {Role: "assistant", Content: body}}, LossAssistant)
		if err != nil {
			t.Fatal(err)
		}
		if len(e.toks) > 100 {
			long++
		} else {
			short++
		}
	}
	data := writeFile(t, t.TempDir(), "d.jsonl", strings.Join(lines, "\n"))
	dir := modelDir(t, nil)
	for _, policy := range []string{OverlongDrop, OverlongTruncate} {
		r, err := Validate(context.Background(), dir, Chat, data, Options{ContextLength: 100, Overlong: policy})
		if err != nil {
			t.Fatal(err)
		}
		st := r.Stats
		if st.Overlong != int64(long) || long == 0 {
			t.Fatalf("%s: overlong %d, want %d", policy, st.Overlong, long)
		}
		if policy == OverlongDrop && (st.Dropped != int64(long) || st.Truncated != 0 || st.Examples != int64(short)) {
			t.Fatalf("drop: %+v", st)
		}
		if policy == OverlongTruncate && (st.Truncated != int64(long) || st.Dropped != 0 || st.Examples != 30) {
			t.Fatalf("truncate: %+v", st)
		}
		if st.Lengths.Max <= 100 || st.Lengths.P50 > st.Lengths.P90 {
			t.Fatalf("lengths %+v", st.Lengths)
		}
	}
	if _, err := os.Stat(data); err != nil {
		t.Fatal(err)
	}
}

// The "one full context length" guidance speaks of the rows trained on:
// the context length given (a run passes the one it chose to fit in
// memory), else the model's maximum.
func TestGuidanceUsesContextLength(t *testing.T) {
	data := writeFile(t, t.TempDir(), "i.jsonl", `{"prompt":"a question","response":"an answer"}`)
	dir := modelDir(t, nil)
	for _, tc := range []struct{ ctx, want int }{{64, 64}, {0, 131072}} { // the test model has Llama 3.1's config
		r, err := Validate(context.Background(), dir, Instruct, data, Options{ContextLength: tc.ctx})
		if err != nil {
			t.Fatal(err)
		}
		if r.ContextLength != tc.want || len(r.Warnings) == 0 || !strings.Contains(r.Warnings[0], fmt.Sprintf("one full context length (%d tokens per row)", tc.want)) {
			t.Errorf("context length %d: report at %d, warnings %q; want the guidance at %d", tc.ctx, r.ContextLength, r.Warnings, tc.want)
		}
	}
}
