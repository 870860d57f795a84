package server_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"hone/client"
)

// TestServingEndpointInvocations: the hosted product's serving-endpoint
// route, with the chat body its apps send, answers as hone's endpoint of
// that name does, whole and streamed, in OpenAI's chat completion format.
func TestServingEndpointInvocations(t *testing.T) {
	h, _ := servingHarness(t)
	ctx := context.Background()
	if _, err := h.c.CreateEndpoint(ctx, client.CreateEndpointRequest{Name: "support-bot", Model: "main.demo.bot@champion"}); err != nil {
		t.Fatal(err)
	}
	msgs := []client.ChatMessage{{Role: "system", Content: "Answer briefly."}, {Role: "user", Content: "What is 12 + 30?"}}
	native, err := h.c.Generate(ctx, client.GenerateRequest{Model: "main.demo.bot/1", Messages: msgs, MaxTokens: 8, Temperature: ptr(0.0)})
	if err != nil {
		t.Fatal(err)
	}
	auth := map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + testToken}
	body := `{"messages":[{"role":"system","content":"Answer briefly."},{"role":"user","content":"What is 12 + 30?"}],"max_tokens":8,"temperature":0}`

	got := send(t, "POST", h.url+"/serving-endpoints/support-bot/invocations", body, auth)
	var resp struct {
		Object  string
		Model   string
		Choices []struct {
			Message      struct{ Role, Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			Prompt     int `json:"prompt_tokens"`
			Completion int `json:"completion_tokens"`
		}
	}
	if err := json.Unmarshal([]byte(got.body), &resp); err != nil || got.status != 200 {
		t.Fatalf("invocations = %d %s", got.status, got.body)
	}
	if resp.Object != "chat.completion" || len(resp.Choices) != 1 || resp.Choices[0].Message.Role != "assistant" ||
		resp.Choices[0].Message.Content != native.Text || resp.Choices[0].FinishReason != native.FinishReason ||
		resp.Usage.Prompt != native.Usage.PromptTokens || resp.Usage.Completion != native.Usage.CompletionTokens || resp.Model != "main.demo.bot/1" {
		t.Errorf("invocations = %s, want the native answer %+v", got.body, native)
	}

	// Streamed: server-sent chat chunks that add up to the same text.
	got = send(t, "POST", h.url+"/serving-endpoints/support-bot/invocations", strings.Replace(body, `"temperature":0`, `"temperature":0,"stream":true`, 1), auth)
	text, chunks := "", 0
	for _, line := range strings.Split(got.body, "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c struct {
			Object  string
			Choices []struct{ Delta struct{ Content string } }
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil || c.Object != "chat.completion.chunk" {
			t.Fatalf("stream line %q: %v", data, err)
		}
		chunks++
		for _, ch := range c.Choices {
			text += ch.Delta.Content
		}
	}
	if got.status != 200 || text != native.Text || chunks < 3 || !strings.HasSuffix(strings.TrimSpace(got.body), "data: [DONE]") {
		t.Errorf("streamed invocations = %d, %d chunks, text %q; want %q ending with [DONE]", got.status, chunks, text, native.Text)
	}

	// Apps that point the OpenAI client at <host>/serving-endpoints.
	got = send(t, "POST", h.url+"/serving-endpoints/chat/completions", strings.Replace(body, `{`, `{"model":"support-bot",`, 1), auth)
	if err := json.Unmarshal([]byte(got.body), &resp); err != nil || got.status != 200 || resp.Choices[0].Message.Content != native.Text {
		t.Errorf("/serving-endpoints/chat/completions = %d %s, want %q", got.status, got.body, native.Text)
	}

	for _, tc := range []struct {
		name, path, body string
		header           map[string]string
		want             int
		wantMsg          string
	}{
		{"unknown endpoint", "/serving-endpoints/nope/invocations", body, auth, 404, "nope"},
		{"dataframe body", "/serving-endpoints/support-bot/invocations", `{"dataframe_records":[{"x":1}]}`, auth, 400, "messages is required"},
		{"other model", "/serving-endpoints/support-bot/invocations", `{"model":"main.demo.bot/2","messages":[{"role":"user","content":"hi"}]}`, auth, 400, "leave model out"},
		{"no token", "/serving-endpoints/support-bot/invocations", body, map[string]string{"Content-Type": "application/json"}, 401, "API key"},
		{"text/plain", "/serving-endpoints/support-bot/invocations", body, map[string]string{"Content-Type": "text/plain", "Authorization": "Bearer " + testToken}, 415, "application/json"},
	} {
		got := send(t, "POST", h.url+tc.path, tc.body, tc.header)
		var oe struct {
			Error struct{ Message, Type string } `json:"error"`
		}
		json.Unmarshal([]byte(got.body), &oe)
		if got.status != tc.want || !strings.Contains(oe.Error.Message, tc.wantMsg) || oe.Error.Type == "" {
			t.Errorf("%s: %d %s, want %d with an OpenAI error containing %q", tc.name, got.status, got.body, tc.want, tc.wantMsg)
		}
	}
}
