package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hone/catalog"
	"hone/chattemplate"
	"hone/client"
	"hone/generate"
	"hone/internal/testmodel"
	"hone/server"
	"hone/serving"
	"hone/store/storetest"
	"hone/tokenizer"
)

const testToken = "sekret"

func ptr[T any](v T) *T { return &v }

// servingHarness is a server with registered models: main.demo.bot
// versions 1 (alias champion) and 2, random tiny Llama 3 models with the
// real tokenizer and chat template, and main.demo.base version 1, the same
// without a chat template. It returns version 1's directory.
func servingHarness(t *testing.T) (*harness, string) {
	t.Helper()
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{token: testToken})
	cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(h.home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	register := func(model string, seed uint64, chat bool) string {
		src := filepath.Join(t.TempDir(), "model")
		testmodel.Write(t, src, testmodel.Llama3Tiny, seed)
		if !chat {
			p := filepath.Join(src, "tokenizer_config.json")
			var cfg map[string]any
			b, err := os.ReadFile(p)
			if err == nil {
				err = json.Unmarshal(b, &cfg)
			}
			if err != nil {
				t.Fatal(err)
			}
			delete(cfg, "chat_template")
			b, _ = json.Marshal(cfg)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		v, err := cat.Register(ctx, catalog.Registration{Target: catalog.Name{Catalog: "main", Schema: "demo", Model: model},
			SourceDir: src, Move: true, Run: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return v.StorageLocation
	}
	dir := register("bot", 1, true)
	register("bot", 2, true)
	register("base", 3, false)
	if err := cat.SetAlias(ctx, "main.demo.bot", 1, "champion"); err != nil {
		t.Fatal(err)
	}
	return h, dir
}

func TestGenerateAPI(t *testing.T) {
	h, dir := servingHarness(t)
	ctx := context.Background()
	chat := []client.ChatMessage{{Role: "system", Content: "Answer briefly."}, {Role: "user", Content: "What is 12 + 30?"}}
	greedy := client.GenerateRequest{Model: "main.demo.bot/1", Messages: chat, MaxTokens: 8, Temperature: ptr(0.0)}
	first, err := h.c.Generate(ctx, greedy)
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.c.Generate(ctx, greedy)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, first) {
		t.Errorf("greedy decoding differs between calls: %+v then %+v", first, again)
	}
	if len(first.TokenIDs) != first.Usage.CompletionTokens || len(first.PromptTokenIDs) != first.Usage.PromptTokens {
		t.Errorf("Generate returned %d prompt and %d completion ids, usage counts %+v", len(first.PromptTokenIDs), len(first.TokenIDs), first.Usage)
	}
	if first.Model != "main.demo.bot/1" || first.FinishReason != client.FinishLength || first.Usage.CompletionTokens != 8 {
		t.Errorf("Generate(max_tokens 8) = %+v, want model main.demo.bot/1, finish length after 8 tokens", first)
	}
	// The prompt is counted as the tokenizer encodes the rendered chat.
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := chattemplate.FromModelDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := generate.EncodeChat(tok, tmpl, []chattemplate.Message{{Role: "system", Content: "Answer briefly."}, {Role: "user", Content: "What is 12 + 30?"}})
	if err != nil {
		t.Fatal(err)
	}
	if u := first.Usage; u.PromptTokens != len(ids) || u.TotalTokens != u.PromptTokens+u.CompletionTokens || ids[0] != tok.Special().BOS {
		t.Errorf("usage %+v, want %d prompt tokens (BOS first) and a consistent total", u, len(ids))
	}

	// Aliases and the bare name resolve through the catalog.
	byAlias := greedy
	byAlias.Model = "main.demo.bot@champion"
	if got, err := h.c.Generate(ctx, byAlias); err != nil || got.Model != "main.demo.bot/1" || got.Text != first.Text {
		t.Errorf("Generate(@champion) = %+v, %v; want version 1's %q", got, err, first.Text)
	}
	newest := greedy
	newest.Model = "main.demo.bot"
	if got, err := h.c.Generate(ctx, newest); err != nil || got.Model != "main.demo.bot/2" {
		t.Errorf("Generate(main.demo.bot) = %+v, %v; want the newest version 2", got, err)
	}

	// A model without a chat template completes raw prompts only.
	raw, err := h.c.Generate(ctx, client.GenerateRequest{Model: "main.demo.base/1", Prompt: "Once upon a time", MaxTokens: 3, Seed: ptr(uint64(7))})
	if err != nil {
		t.Fatal(err)
	}
	if raw.Usage.PromptTokens != len(tok.Encode("Once upon a time", true)) || raw.Usage.CompletionTokens > 3 {
		t.Errorf("Generate(prompt) usage %+v, want %d prompt tokens", raw.Usage, len(tok.Encode("Once upon a time", true)))
	}

	for _, tc := range []struct {
		name   string
		req    client.GenerateRequest
		status int
		want   string
	}{
		{"unknown model", client.GenerateRequest{Model: "main.demo.nope", Prompt: "x"}, 404, "main.demo.nope"},
		{"unknown version", client.GenerateRequest{Model: "main.demo.bot/9", Prompt: "x"}, 404, "version 9"},
		{"unknown alias", client.GenerateRequest{Model: "main.demo.bot@prod", Prompt: "x"}, 404, "alias prod"},
		{"not a catalog name", client.GenerateRequest{Model: "gpt-4o", Prompt: "x"}, 404, "catalog.schema.model"},
		{"no template", client.GenerateRequest{Model: "main.demo.base", Messages: chat}, 400, "no chat template"},
		{"both", client.GenerateRequest{Model: "main.demo.bot", Messages: chat, Prompt: "x"}, 400, "not both"},
		{"no model", client.GenerateRequest{Prompt: "x"}, 400, "model is required"},
	} {
		_, err := h.c.Generate(ctx, tc.req)
		if client.StatusOf(err) != tc.status || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Generate(%s) = %v (status %d), want %d containing %q", tc.name, err, client.StatusOf(err), tc.status, tc.want)
		}
	}
	bad, err := client.New(client.Config{Server: h.url, Token: "wrong"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Generate(ctx, greedy); client.StatusOf(err) != 401 {
		t.Errorf("Generate with a wrong token = %v, want 401", err)
	}
}

// post sends body to the OpenAI-compatible path with the token.
func post(t *testing.T, h *harness, path, token, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// The OpenAI surface at the wire level: error shapes and statuses, and the
// event stream's framing (the official client is exercised by
// TestOpenAIClient).
func TestOpenAIWire(t *testing.T) {
	h, _ := servingHarness(t)
	type oaiErr struct {
		Error struct{ Message, Type, Code string }
	}
	for _, tc := range []struct {
		name, path, token, body string
		status                  int
		code                    string
	}{
		{"no token", "/v1/chat/completions", "", `{"model":"main.demo.bot/1","messages":[{"role":"user","content":"hi"}]}`, 401, "invalid_api_key"},
		{"unknown model", "/v1/chat/completions", testToken, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, 404, "model_not_found"},
		{"n=2", "/v1/chat/completions", testToken, `{"model":"main.demo.bot/1","n":2,"messages":[{"role":"user","content":"hi"}]}`, 400, "invalid_argument"},
		{"image part", "/v1/chat/completions", testToken, `{"model":"main.demo.bot/1","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, "invalid_argument"},
		{"token prompt", "/v1/completions", testToken, `{"model":"main.demo.bot/1","prompt":[1,2,3]}`, 400, "invalid_argument"},
		{"unknown version", "/v1/completions", testToken, `{"model":"main.demo.bot/7","prompt":"hi","stream":true}`, 404, "model_not_found"},
	} {
		resp, b := post(t, h, tc.path, tc.token, tc.body)
		var e oaiErr
		if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != tc.status || e.Error.Code != tc.code || e.Error.Message == "" ||
			e.Error.Type != "invalid_request_error" {
			t.Errorf("%s: %d %s, want %d with an OpenAI error coded %s", tc.name, resp.StatusCode, b, tc.status, tc.code)
		}
	}

	body := `{"model":"main.demo.bot@champion","messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],
		"max_tokens":6,"temperature":0,"stream":%s,"stream_options":{"include_usage":true}}`
	resp, b := post(t, h, "/v1/chat/completions", testToken, strings.Replace(body, "%s", "false", 1))
	var whole struct {
		Model   string
		Choices []struct {
			Message      struct{ Role, Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal(b, &whole); err != nil || resp.StatusCode != 200 || len(whole.Choices) != 1 {
		t.Fatalf("chat completion: %d %s", resp.StatusCode, b)
	}
	resp, b = post(t, h, "/v1/chat/completions", testToken, strings.Replace(body, "%s", "true", 1))
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("stream: %d %s %s", resp.StatusCode, ct, b)
	}
	var text, finish string
	var events []string
	usage := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("stream line %q is not a data line", line)
		}
		events = append(events, data)
		if data == "[DONE]" {
			continue
		}
		var c struct {
			Object  string
			Model   string
			Choices []struct {
				Delta        struct{ Content string }
				FinishReason *string `json:"finish_reason"`
			}
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil || c.Object != "chat.completion.chunk" || c.Model != "main.demo.bot/1" {
			t.Fatalf("chunk %s: %v", data, err)
		}
		for _, ch := range c.Choices {
			text += ch.Delta.Content
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			usage = c.Usage.CompletionTokens
		}
	}
	if events[len(events)-1] != "[DONE]" {
		t.Errorf("stream ends with %q, want [DONE]", events[len(events)-1])
	}
	if w := whole.Choices[0]; text != w.Message.Content || finish != w.FinishReason || usage != whole.Usage.CompletionTokens || w.Message.Role != "assistant" {
		t.Errorf("stream gave %q, %s, %d tokens; the response %q, %s, %d", text, finish, usage, w.Message.Content, w.FinishReason, whole.Usage.CompletionTokens)
	}
}

// Requests beyond the model's limits are refused with 400 naming the field,
// as OpenAI names it; a text completion without max_tokens whose prompt
// leaves less than OpenAI's default of 16 tokens gets what fits.
func TestGenerationLimitsHTTP(t *testing.T) {
	h, _ := servingHarness(t)
	long := strings.Repeat(" a", 2040)
	for _, tc := range []struct {
		name, path, body, param, want string
	}{
		{"chat max_tokens", "/v1/chat/completions", `{"model":"main.demo.bot/1","messages":[{"role":"user","content":"hi"}],"max_tokens":5000}`,
			"max_tokens", "context window is 2048"},
		{"chat max_completion_tokens", "/v1/chat/completions", `{"model":"main.demo.bot/1","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":2048}`,
			"max_completion_tokens", "lower max_tokens"},
		{"text max_tokens", "/v1/completions", `{"model":"main.demo.base/1","prompt":"` + long + `","max_tokens":16}`, "max_tokens", "the prompt is"},
		{"five stops", "/v1/completions", `{"model":"main.demo.base/1","prompt":"hi","stop":["a","b","c","d","e"]}`, "stop", "at most 4"},
		{"long stop", "/v1/chat/completions", `{"model":"main.demo.bot/1","messages":[{"role":"user","content":"hi"}],"stop":"` + strings.Repeat("s", 300) + `"}`,
			"stop", "at most 256 bytes"},
		{"streamed max_tokens", "/v1/chat/completions", `{"model":"main.demo.bot/1","messages":[{"role":"user","content":"hi"}],"max_tokens":9999,"stream":true}`,
			"max_tokens", "max_tokens 9999"},
	} {
		resp, b := post(t, h, tc.path, testToken, tc.body)
		var e struct {
			Error struct{ Message, Type, Code, Param string }
		}
		if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != 400 || e.Error.Param != tc.param || e.Error.Type != "invalid_request_error" ||
			!strings.Contains(e.Error.Message, tc.want) {
			t.Errorf("%s: %d %s, want 400 naming param %s with a message containing %q", tc.name, resp.StatusCode, b, tc.param, tc.want)
		}
	}
	resp, b := post(t, h, "/v1/completions", testToken, `{"model":"main.demo.base/1","prompt":"`+long+`","temperature":0}`)
	var text struct {
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal(b, &text); err != nil || resp.StatusCode != 200 || text.Usage.PromptTokens+text.Usage.CompletionTokens > 2048 {
		t.Errorf("text completion without max_tokens near the context: %d %s, want 200 within the 2048-token context", resp.StatusCode, b)
	}
	_, err := h.c.Generate(context.Background(), client.GenerateRequest{Model: "main.demo.bot/1", Prompt: "hi", MaxTokens: 4096})
	if client.StatusOf(err) != 400 || !strings.Contains(err.Error(), "max_tokens 4096") {
		t.Errorf("Generate(max_tokens 4096) = %v, want 400 naming max_tokens", err)
	}
}

// A completion the request deadline stops ends as one whose budget ran
// out: streamed, with a last chunk finishing "length" and [DONE]; whole,
// with the text so far and finish_reason "length".
func TestDeadlineEndsCompletion(t *testing.T) {
	h, _ := servingHarness(t)
	cat, err := catalog.New(catalog.Config{Store: h.st, Root: filepath.Join(h.home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	// The clock jumps past the deadline after a few readings: it is read
	// once when a request starts and once before each model call.
	var reads atomic.Int64
	clock := func() time.Time {
		if reads.Add(1)%12 == 0 {
			return time.Now().Add(time.Hour)
		}
		return time.Now()
	}
	models, err := serving.New(serving.Config{RequestTimeout: time.Minute, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Runs: h.svc, Catalog: cat, Token: testToken, Serving: models})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	h2 := *h
	h2.url = ts.URL
	body := `{"model":"main.demo.bot/1","messages":[{"role":"user","content":"hi"}],"max_tokens":500,"temperature":0,"stream":%s,
		"stream_options":{"include_usage":true}}`

	reads.Store(0)
	resp, b := post(t, &h2, "/v1/chat/completions", testToken, strings.Replace(body, "%s", "false", 1))
	var whole struct {
		Choices []struct {
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal(b, &whole); err != nil || resp.StatusCode != 200 || len(whole.Choices) != 1 ||
		whole.Choices[0].FinishReason != "length" || whole.Usage.CompletionTokens >= 500 {
		t.Errorf("completion past its deadline: %d %s, want 200 finishing length before 500 tokens", resp.StatusCode, b)
	}

	reads.Store(0)
	resp, b = post(t, &h2, "/v1/chat/completions", testToken, strings.Replace(body, "%s", "true", 1))
	events := strings.Split(strings.TrimSpace(string(b)), "\n\n")
	n := len(events)
	if resp.StatusCode != 200 || n < 3 || events[n-1] != "data: [DONE]" || !strings.Contains(events[n-3], `"finish_reason":"length"`) ||
		!strings.Contains(events[n-2], `"completion_tokens":`) || strings.Contains(events[n-2], `"completion_tokens":500`) {
		t.Errorf("stream past its deadline: %d %s, want a last chunk finishing length before 500 tokens, usage, [DONE]", resp.StatusCode, b)
	}
}
