package dataset

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/chattemplate"
	"hone/internal/testassets"
)

// spDir is the real SentencePiece tokenizer asset (Mistral 7B's
// tokenizer.json: Prepend/Replace normalizers, byte_fallback, the
// Replace/ByteFallback/Fuse/Strip decoder).
const spDir = "tokenizer-llama2/package/models"

const mistralConfig = `{"architectures":["MistralForCausalLM"],"model_type":"mistral","vocab_size":32000,
"hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
"num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":1000000.0,"max_position_embeddings":32768,
"sliding_window":null,"tie_word_embeddings":false,"bos_token_id":1,"eos_token_id":2,"torch_dtype":"bfloat16"}`

// spModel loads a chat model with the SentencePiece tokenizer and template.
func spModel(t *testing.T, template string) *model {
	t.Helper()
	src := testassets.Path(t, spDir)
	dir := t.TempDir()
	tj, err := os.ReadFile(filepath.Join(src, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(src, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["chat_template"] = template
	tc, _ := json.Marshal(cfg)
	writeFile(t, dir, "tokenizer.json", string(tj))
	writeFile(t, dir, "tokenizer_config.json", string(tc))
	writeFile(t, dir, "config.json", mistralConfig)
	m, err := loadModel(dir, Chat, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type spFixture struct {
	Cases []struct {
		Template     string `json:"template"`
		Conversation string `json:"conversation"`
		Messages     int    `json:"messages"`
		Gen          bool   `json:"add_generation_prompt"`
		Text         string `json:"text"`
		IDs          []int  `json:"ids"`
	} `json:"cases"`
}

type renderFixture struct {
	Conversations map[string]struct {
		Messages []chattemplate.Message `json:"messages"`
	} `json:"conversations"`
	Templates []struct {
		Names    []string `json:"names"`
		Template string   `json:"template"`
	} `json:"templates"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// trainedText is each maximal run of trained tokens as the text it covers
// (alignTokens' byte ranges, which are checked to spell text exactly).
func trainedText(t *testing.T, m *model, text string, ex Example) []string {
	t.Helper()
	starts, ends, err := m.alignTokens(text, ex.InputIDs)
	if err != nil {
		t.Fatal(err)
	}
	var runs []string
	run := -1
	for i, l := range ex.Labels {
		switch {
		case l != IgnoreIndex && run < 0:
			run = starts[i]
		case l == IgnoreIndex && run >= 0:
			runs = append(runs, text[run:ends[i-1]])
			run = -1
		}
	}
	if run >= 0 {
		runs = append(runs, text[run:])
	}
	return runs
}

// Llama 2 and Mistral chat templates with the real SentencePiece tokenizer:
// the render equals jinja2's, the ids equal HF tokenizers' encoding of it
// (tools/reference/tokenizer/make_chat_fixtures.mjs), and the trained tokens
// are exactly the assistant turns as each template renders them: Llama 2
// " " + content + " </s>", Mistral content + "</s> ".
func TestChatSentencePieceMatchesHF(t *testing.T) {
	var fx spFixture
	readJSON(t, filepath.Join("testdata", "chat_sentencepiece.json"), &fx)
	var rf renderFixture
	readJSON(t, filepath.Join("..", "chattemplate", "testdata", "renders.json"), &rf)
	models := map[string]*model{}
	for _, tf := range rf.Templates {
		if n := tf.Names[0]; n == "ollama:library/llama2:7b" || n == "ollama:library/mistral:7b-instruct-fp16" {
			models[n] = spModel(t, tf.Template)
		}
	}
	trainCases := 0
	for _, c := range fx.Cases {
		m := models[c.Template]
		msgs := rf.Conversations[c.Conversation].Messages[:c.Messages]
		name := c.Template + "/" + c.Conversation
		text, err := m.render(msgs, c.Gen)
		if err != nil || text != c.Text {
			t.Fatalf("%s: render = %q, %v; jinja2 gives %q", name, text, err, c.Text)
		}
		if got := m.tok.Encode(text, false); !slices.Equal(got, c.IDs) {
			t.Fatalf("%s: ids %v, HF %v", name, got, c.IDs)
		}
		if c.Gen || msgs[len(msgs)-1].Role != "assistant" {
			continue
		}
		trainCases++
		e, err := m.encodeChat(msgs, LossAssistant)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		ex := e.example()
		if !slices.Equal(ex.InputIDs, c.IDs) {
			t.Fatalf("%s: example ids %v, HF %v", name, ex.InputIDs, c.IDs)
		}
		var want []string
		for _, msg := range msgs {
			if msg.Role != "assistant" {
				continue
			}
			if strings.Contains(c.Template, "mistral") {
				want = append(want, msg.Content+"</s> ")
			} else {
				want = append(want, " "+strings.TrimSpace(msg.Content)+" </s>")
			}
		}
		if got := trainedText(t, m, c.Text, ex); !slices.Equal(got, want) {
			t.Errorf("%s: trained spans\n got %q\nwant %q", name, got, want)
		}
	}
	if trainCases < 4 {
		t.Fatalf("only %d training conversations in the fixture", trainCases)
	}
}

// A token that straddles a span boundary is trained: it overlaps the
// assistant's text, so its prediction is part of the answer. Here the user
// ends with "Hel" and the assistant says "lo wor", then the user "ld": the
// text "Hello world" tokenizes as "▁Hello" "▁world", both straddling, both
// trained. A zero-width token (the "▁" SentencePiece prepends after an
// added token, here before "12") goes with the byte it precedes.
func TestChatSentencePieceStraddle(t *testing.T) {
	m := spModel(t, "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% if m['role'] == 'system' %}{{ eos_token }}{% endif %}{% endfor %}")
	for _, tc := range []struct {
		msgs    []chattemplate.Message
		trained []string // token strings
	}{
		{[]chattemplate.Message{{Role: "user", Content: "Hel"}, {Role: "assistant", Content: "lo wor"}, {Role: "user", Content: "ld"}},
			[]string{"▁Hello", "▁world"}},
		{[]chattemplate.Message{{Role: "user", Content: "Hello wor"}, {Role: "assistant", Content: "ld"}},
			[]string{"▁world"}},
		{[]chattemplate.Message{{Role: "system", Content: "Q"}, {Role: "assistant", Content: "12"}},
			[]string{"▁", "1", "2"}},
	} {
		e, err := m.encodeChat(tc.msgs, LossAssistant)
		if err != nil {
			t.Fatal(err)
		}
		ex := e.example()
		full, _ := m.render(tc.msgs, false)
		if !slices.Equal(ex.InputIDs, m.tok.Encode(full, false)) {
			t.Fatalf("%v: ids differ from tokenizing the whole render", tc.msgs)
		}
		var got []string
		for i, l := range ex.Labels {
			if l != IgnoreIndex {
				s, _ := m.tok.Token(ex.InputIDs[i])
				got = append(got, s)
			}
		}
		if !slices.Equal(got, tc.trained) {
			t.Errorf("%v: trained tokens %q, want %q", tc.msgs, got, tc.trained)
		}
	}
}

// An added token with lstrip/rstrip swallows the whitespace beside it; that
// whitespace belongs to the token, so an lstrip EOS after a space-padded
// answer still maps and is trained with the answer.
func TestChatAddedTokenStrip(t *testing.T) {
	src := testassets.Path(t, spDir)
	b, err := os.ReadFile(filepath.Join(src, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tj map[string]any
	if err := json.Unmarshal(b, &tj); err != nil {
		t.Fatal(err)
	}
	for _, a := range tj["added_tokens"].([]any) {
		if a := a.(map[string]any); a["content"] == "</s>" {
			a["lstrip"], a["rstrip"] = true, true
		}
	}
	m := spModel(t, "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}  {{ eos_token }}\n{% endif %}{% endfor %}")
	patched, _ := json.Marshal(tj)
	writeFile(t, m.dir, "tokenizer.json", string(patched))
	m, err = loadModel(m.dir, Chat, 0)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []chattemplate.Message{{Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello"}}
	full, _ := m.render(msgs, false)
	ids := m.tok.Encode(full, false)
	if !slices.Contains(ids, m.sp.EOS) || strings.Count(m.tok.Decode(ids, false), " ") >= strings.Count(full, " ") {
		t.Fatalf("test premise: the lstrip EOS should swallow spaces in %q (ids %v)", full, ids)
	}
	e, err := m.encodeChat(msgs, LossAssistant)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := trainedText(t, m, full, e.example()), []string{" Hello  </s>\n"}; !slices.Equal(got, want) {
		t.Errorf("trained %q, want %q", got, want)
	}
}
