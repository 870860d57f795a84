package server_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"hone/client"
	"hone/internal/testassets"
)

// TestOpenAIClient drives the OpenAI-compatible routes with the official
// openai npm package (fetched by scripts/test-assets.sh) under node. It
// fails, never skips, when node or the package is missing.
func TestOpenAIClient(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is required for the OpenAI client test (scripts/install-deps.sh installs it): %v", err)
	}
	testassets.Path(t, "openai/package/index.mjs") // fails the test early when missing
	h, _ := servingHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The native API's greedy answer is what the OpenAI routes must give.
	native, err := h.c.Generate(ctx, client.GenerateRequest{Model: "main.demo.bot/1", MaxTokens: 8, Temperature: ptr(0.0),
		Messages: []client.ChatMessage{{Role: "user", Content: "What is 12 + 30?"}}})
	if err != nil {
		t.Fatal(err)
	}
	// Sampled text varies more than a random model's greedy text: cut it
	// in the middle with a stop string.
	sampled, err := h.c.Generate(ctx, client.GenerateRequest{Model: "main.demo.bot/1", MaxTokens: 8, Temperature: ptr(1.0),
		Seed: ptr(uint64(5)), Messages: []client.ChatMessage{{Role: "user", Content: "What is 12 + 30?"}}})
	if err != nil {
		t.Fatal(err)
	}
	runes := []rune(sampled.Text)
	if len(runes) < 6 {
		t.Fatalf("sampled text %q too short to pick a stop string from", sampled.Text)
	}
	stop := string(runes[len(runes)/2 : len(runes)/2+2])

	// An endpoint following main.demo.bot@champion (version 1) answers as
	// the version does.
	if _, err := h.c.CreateEndpoint(ctx, client.CreateEndpointRequest{Name: "bot", Model: "main.demo.bot@champion"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, model string }{{"version", "main.demo.bot/1"}, {"endpoint", "bot"}} {
		t.Run(tc.name, func(t *testing.T) { checkOpenAIClient(ctx, t, h, tc.model, native, sampled, stop) })
	}
}

// checkOpenAIClient runs testdata/openai_client.mjs against model, which
// must answer as main.demo.bot/1, and checks what the client saw.
func checkOpenAIClient(ctx context.Context, t *testing.T, h *harness, model string, native, sampled *client.GenerateResponse, stop string) {
	node, _ := exec.LookPath("node")
	cmd := exec.CommandContext(ctx, node, "testdata/openai_client.mjs")
	cmd.Env = append(os.Environ(), "OPENAI_MODULE="+testassets.Path(t, "openai/package/index.mjs"), "HONE_BASE_URL="+h.url+"/v1",
		"HONE_TOKEN="+testToken, "HONE_MODEL="+model, "HONE_STOP="+stop)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("node testdata/openai_client.mjs: %v\n%s", err, stderr.String())
	}
	type usage struct {
		Prompt     int `json:"prompt_tokens"`
		Completion int `json:"completion_tokens"`
		Total      int `json:"total_tokens"`
	}
	var got struct {
		Models []string
		Chat   struct {
			Model, Object, Text, Role, Finish string
			Usage                             usage
		}
		Stream struct {
			Text, Finish string
			Chunks       int
			Usage        *usage
			Models       []string
		}
		Sampled    struct{ Text, Streamed string }
		Stopped    struct{ Text, Finish, Streamed string }
		Completion struct {
			Object, Text, Finish string
			Usage                usage
		}
		TextStream               struct{ Text, Finish string }
		Missing, MissingEndpoint struct {
			Status              int
			Code, Type, Message string
		}
		Unauthorized struct {
			Status int
			Code   string
		}
		TwoChoices struct {
			Status  int
			Message string
		}
	}
	if err := json.Unmarshal(stdout, &got); err != nil {
		t.Fatalf("node printed %s: %v", stdout, err)
	}
	t.Logf("openai client saw: %s", stdout)

	for _, id := range []string{"main.demo.bot/1", "main.demo.bot/2", "main.demo.bot@champion", "main.demo.base/1", "bot"} {
		if !slices.Contains(got.Models, id) {
			t.Errorf("models.list() = %v, lacks %s", got.Models, id)
		}
	}
	c := got.Chat
	if c.Model != "main.demo.bot/1" || c.Object != "chat.completion" || c.Role != "assistant" || c.Text != native.Text ||
		c.Finish != native.FinishReason || c.Usage != (usage{native.Usage.PromptTokens, native.Usage.CompletionTokens, native.Usage.TotalTokens}) {
		t.Errorf("chat.completions.create = %+v, want the native API's %+v", c, native)
	}
	s := got.Stream
	if s.Text != c.Text || s.Finish != c.Finish || s.Usage == nil || *s.Usage != c.Usage || s.Chunks < 3 || !slices.Equal(s.Models, []string{c.Model}) {
		t.Errorf("streamed chat = %+v, want the non-streamed %q, %s, %+v", s, c.Text, c.Finish, c.Usage)
	}
	if got.Sampled.Text != sampled.Text || got.Sampled.Streamed != sampled.Text {
		t.Errorf("seeded sampling = %+v, want %q (the native API's) whole and streamed", got.Sampled, sampled.Text)
	}
	if want := sampled.Text[:strings.Index(sampled.Text, stop)]; got.Stopped.Text != want || got.Stopped.Finish != "stop" || got.Stopped.Streamed != want {
		t.Errorf("chat with stop %q = %+v, want %q, stop (whole and streamed)", stop, got.Stopped, want)
	}
	tc := got.Completion
	if tc.Object != "text_completion" || tc.Finish != "length" || tc.Usage.Completion != 4 || tc.Usage.Total != tc.Usage.Prompt+4 {
		t.Errorf("completions.create = %+v, want a 4-token text completion", tc)
	}
	if got.TextStream.Text != tc.Text || got.TextStream.Finish != tc.Finish {
		t.Errorf("streamed completion = %+v, want %q, %s", got.TextStream, tc.Text, tc.Finish)
	}
	if m := got.Missing; m.Status != 404 || m.Code != "model_not_found" || m.Type != "invalid_request_error" || !strings.Contains(m.Message, "main.demo.nope") {
		t.Errorf("unknown model = %+v, want 404 model_not_found", m)
	}
	if m := got.MissingEndpoint; m.Status != 404 || m.Code != "model_not_found" || m.Type != "invalid_request_error" ||
		!strings.Contains(m.Message, "no-such-endpoint") {
		t.Errorf("unknown endpoint = %+v, want 404 model_not_found naming it", m)
	}
	if u := got.Unauthorized; u.Status != 401 || u.Code != "invalid_api_key" {
		t.Errorf("wrong API key = %+v, want 401 invalid_api_key", u)
	}
	if n := got.TwoChoices; n.Status != 400 || !strings.Contains(n.Message, "only n=1") {
		t.Errorf("n=2 = %+v, want 400 naming n=1", n)
	}
}
