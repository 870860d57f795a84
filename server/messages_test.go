package server_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"hone/client"
)

// Unknown chat roles and malformed messages are refused with 400 naming the
// field, on the OpenAI API and on the native one.
func TestChatMessageRules(t *testing.T) {
	h, _ := servingHarness(t)
	for _, tc := range []struct {
		name, messages, param, want string
	}{
		{"unknown role", `[{"role":"wizard","content":"hi"}]`, "messages[0].role", `"wizard" is not a chat role`},
		{"tool role", `[{"role":"user","content":"hi"},{"role":"tool","content":"42"}]`, "messages[1].role", `"tool"`},
		{"missing role", `[{"content":"hi"}]`, "messages[0].role", "missing"},
		{"role not a string", `[{"role":7,"content":"hi"}]`, "messages[0].role", "want a string"},
		{"message not an object", `[{"role":"user","content":"hi"},"hello"]`, "messages[1]", "want an object"},
		{"content a number", `[{"role":"user","content":3}]`, "messages[0].content", "messages[0].content"},
		{"missing content", `[{"role":"user"}]`, "messages[0].content", "missing"},
	} {
		body := `{"model":"main.demo.bot/1","max_tokens":2,"messages":` + tc.messages + `}`
		resp, b := post(t, h, "/v1/chat/completions", testToken, body)
		var e struct {
			Error struct{ Message, Type, Param string }
		}
		if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != 400 || e.Error.Param != tc.param ||
			!strings.Contains(e.Error.Message, tc.want) || !strings.Contains(e.Error.Message, tc.param) {
			t.Errorf("%s: %d %s, want 400 naming param %s with a message containing %q", tc.name, resp.StatusCode, b, tc.param, tc.want)
		}
	}
	// The native API takes the same roles.
	_, err := h.c.Generate(context.Background(), client.GenerateRequest{Model: "main.demo.bot/1", MaxTokens: 2,
		Messages: []client.ChatMessage{{Role: "user", Content: "hi"}, {Role: "wizard", Content: "abracadabra"}}})
	if client.StatusOf(err) != 400 || !strings.Contains(err.Error(), "messages[1].role") || !strings.Contains(err.Error(), "wizard") {
		t.Errorf("Generate(role wizard) = %v, want 400 naming messages[1].role", err)
	}
	// developer is OpenAI's name for system.
	resp, b := post(t, h, "/v1/chat/completions", testToken,
		`{"model":"main.demo.bot/1","max_tokens":2,"messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 {
		t.Errorf("developer role: %d %s, want 200", resp.StatusCode, b)
	}
}
