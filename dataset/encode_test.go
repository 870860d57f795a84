package dataset

import (
	"context"
	"slices"
	"strings"
	"testing"

	"hone/chattemplate"
)

var conversation = []chattemplate.Message{
	{Role: "system", Content: "You are a terse assistant."},
	{Role: "user", Content: "What is the capital of France?"},
	{Role: "assistant", Content: "Paris. It has been the capital since 987."},
	{Role: "user", Content: "And of Japan? Answer in one word, please."},
	{Role: "assistant", Content: "Tokyo"},
	{Role: "user", Content: "Thanks!\n\nOne more: 12*12?"},
	{Role: "assistant", Content: "144 — twelve dozen. 🙂"},
}

func assistantTexts(msgs []chattemplate.Message) []string {
	var out []string
	for _, m := range msgs {
		if m.Role == "assistant" {
			out = append(out, strings.TrimSpace(m.Content)+"<|eot_id|>")
		}
	}
	return out
}

func loadTestModel(t *testing.T, template *string) *model {
	t.Helper()
	m, err := loadModel(modelDir(t, template), Chat, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func checkChatLabels(t *testing.T, m *model, msgs []chattemplate.Message) {
	t.Helper()
	e, err := m.encodeChat(msgs, LossAssistant)
	if err != nil {
		t.Fatal(err)
	}
	ex := e.example()
	if len(ex.InputIDs) != len(ex.Labels) {
		t.Fatalf("input_ids %d, labels %d", len(ex.InputIDs), len(ex.Labels))
	}
	got := labelledRuns(m, ex)
	want := assistantTexts(msgs)
	if !slices.Equal(got, want) {
		t.Fatalf("trained spans:\n got %q\nwant %q", got, want)
	}
	// The whole example is the template's render, tokenized once, with a
	// single BOS.
	if ex.InputIDs[0] != m.sp.BOS || ex.InputIDs[1] == m.sp.BOS {
		t.Fatalf("want exactly one BOS first, got %v", ex.InputIDs[:2])
	}
	full, _ := m.render(msgs, false)
	if !slices.Equal(ex.InputIDs, m.tok.Encode(full, false)) {
		t.Fatal("input ids differ from tokenizing the rendered conversation")
	}
	if m.tok.Decode(ex.InputIDs, false) != ex.Text || ex.Text != full {
		t.Fatalf("text %q does not decode from the ids", ex.Text)
	}
}

func TestChatLabelsAssistantTurns(t *testing.T) {
	checkChatLabels(t, loadTestModel(t, nil), conversation)
}

func TestChatLabelsFullLlama31Template(t *testing.T) {
	m := loadTestModel(t, strp(llama31Template(t)))
	checkChatLabels(t, m, conversation)
	checkChatLabels(t, m, conversation[1:]) // no system message: the template adds its own
}

func TestChatLossModes(t *testing.T) {
	m := loadTestModel(t, nil)
	e, err := m.encodeChat(conversation, LossLastAssistant)
	if err != nil {
		t.Fatal(err)
	}
	want := assistantTexts(conversation)
	if got := labelledRuns(m, e.example()); !slices.Equal(got, want[len(want)-1:]) {
		t.Fatalf("last-turn loss: got %q, want %q", got, want[len(want)-1:])
	}
	e, err = m.encodeChat(conversation, LossAll)
	if err != nil {
		t.Fatal(err)
	}
	ex := e.example()
	if !slices.Equal(ex.Labels, ex.InputIDs) {
		t.Fatal("all-token loss: labels differ from input ids")
	}
}

// A template that does not trim lets a token cross the header/content
// boundary ("\n\n" + "\n..." tokenizes as one "\n\n\n"): the whole-text
// tokenization is kept and the crossing token is trained.
func TestChatBoundaryMerge(t *testing.T) {
	tpl := "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
	m := loadTestModel(t, &tpl)
	msgs := []chattemplate.Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "\nHello there"}}
	full, _ := m.render(msgs, false)
	pieces := append(m.tok.Encode(full[:strings.LastIndex(full, "\n\n\n")+2], false), m.tok.Encode("\nHello there<|eot_id|>", false)...)
	if slices.Equal(pieces, m.tok.Encode(full, false)) {
		t.Fatal("test premise: expected a token across the boundary")
	}
	e, err := m.encodeChat(msgs, LossAssistant)
	if err != nil {
		t.Fatal(err)
	}
	ex := e.example()
	if !slices.Equal(ex.InputIDs, m.tok.Encode(full, false)) {
		t.Fatal("input ids differ from tokenizing the whole render")
	}
	if got := labelledRuns(m, ex); !slices.Equal(got, []string{"\n\n\nHello there<|eot_id|>"}) {
		t.Fatalf("trained spans %q", got)
	}
}

func TestInstructBOSAndEOS(t *testing.T) {
	m := loadTestModel(t, nil)
	e := m.encodeInstruct("Translate to French: cat\n", "chat")
	ex := e.example()
	if ex.InputIDs[0] != m.sp.BOS || !m.sp.AddBOS {
		t.Fatalf("first id %d, want BOS %d", ex.InputIDs[0], m.sp.BOS)
	}
	if ex.InputIDs[len(ex.InputIDs)-1] != m.sp.EOS {
		t.Fatal("EOS is not last")
	}
	p := m.tok.Encode("Translate to French: cat\n", false)
	r := m.tok.Encode("chat", false)
	want := slices.Concat([]int{m.sp.BOS}, p, r, []int{m.sp.EOS})
	if !slices.Equal(ex.InputIDs, want) {
		t.Fatalf("ids %v, want %v", ex.InputIDs, want)
	}
	for i, l := range ex.Labels {
		trained := i > len(p)
		if trained != (l != IgnoreIndex) {
			t.Fatalf("position %d: label %d", i, l)
		}
	}
	if got := labelledRuns(m, ex); !slices.Equal(got, []string{"chat" + m.sp.EOSToken}) {
		t.Fatalf("trained %q", got)
	}
}

func TestChatWithoutTemplate(t *testing.T) {
	_, err := Validate(context.Background(), modelDir(t, strp("")), Chat, writeFile(t, t.TempDir(), "d.jsonl", "{}\n"), Options{})
	if err == nil || !strings.Contains(err.Error(), "no chat template") {
		t.Fatalf("err = %v, want a no-chat-template error", err)
	}
}

func TestTemplateRefusesSystem(t *testing.T) {
	tpl := "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
	dir := t.TempDir()
	data := writeFile(t, dir, "d.jsonl", `{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}`+"\n")
	r, err := Validate(context.Background(), modelDir(t, &tpl), Chat, data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.ProblemCount != 1 || r.Problems[0].Rule != RuleTemplate || r.Problems[0].Line != 1 || !strings.Contains(r.Problems[0].Message, "System role not supported") {
		t.Fatalf("problems %+v", r.Problems)
	}
}
