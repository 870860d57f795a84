package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hone/catalog"
	"hone/client"
	"hone/server"
	"hone/serving"
)

// TestEndpointsAPI: endpoints are created, read, listed (paged) and
// deleted through the Go client; their name is a model at /api/generate
// and /v1; one on an alias follows it, is NOT_READY while it is gone, and
// deleting it leaves the model.
func TestEndpointsAPI(t *testing.T) {
	h, _ := servingHarness(t)
	ctx := context.Background()
	auth := map[string]string{"Authorization": "Bearer " + testToken}
	if got := send(t, "GET", h.url+"/api/endpoints", "", auth); got.status != 200 || !strings.Contains(got.body, `"endpoints": []`) {
		t.Errorf("GET /api/endpoints (none) = %d %s, want 200 with endpoints []", got.status, got.body)
	}
	for _, tc := range []struct {
		req    client.CreateEndpointRequest
		status int
		want   string
	}{
		{client.CreateEndpointRequest{Name: "my.bot", Model: "main.demo.bot/1"}, 400, "endpoint name"},
		{client.CreateEndpointRequest{Name: "bot", Model: "main.demo.bot"}, 400, "catalog.schema.model/N"},
		{client.CreateEndpointRequest{Name: "bot", Model: "main.demo.bot@prod"}, 400, "alias prod"},
		{client.CreateEndpointRequest{Name: "bot", Model: "main.demo.bot/9"}, 400, "version 9"},
	} {
		if _, err := h.c.CreateEndpoint(ctx, tc.req); client.StatusOf(err) != tc.status || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateEndpoint(%+v) = %v, want %d containing %q", tc.req, err, tc.status, tc.want)
		}
	}
	e, err := h.c.CreateEndpoint(ctx, client.CreateEndpointRequest{Name: "bot", Model: "main.demo.bot@champion"})
	if err != nil || e.State != client.EndpointReady || e.Version != 1 || e.ServedModel != "main.demo.bot/1" || e.Model != "main.demo.bot@champion" {
		t.Fatalf("CreateEndpoint(bot) = %+v, %v; want READY on version 1", e, err)
	}
	if _, err := h.c.CreateEndpoint(ctx, client.CreateEndpointRequest{Name: "bot", Model: "main.demo.bot/2"}); client.StatusOf(err) != 409 {
		t.Errorf("CreateEndpoint(taken) = %v, want 409", err)
	}
	got := send(t, "GET", h.url+"/api/endpoints/bot", "", auth)
	var raw map[string]any
	if err := json.Unmarshal([]byte(got.body), &raw); err != nil || got.status != 200 || raw["name"] != "bot" ||
		raw["model"] != "main.demo.bot@champion" || raw["version"] != 1.0 || raw["state"] != "READY" {
		t.Errorf("GET /api/endpoints/bot = %d %s, want name, model, version 1, state READY", got.status, got.body)
	}

	// The endpoint answers as its version does, natively and on /v1.
	greedy := client.GenerateRequest{Model: "main.demo.bot/1", Prompt: "Once upon a time", MaxTokens: 6, Temperature: ptr(0.0)}
	want1 := generateText(t, h, greedy)
	greedy.Model = "main.demo.bot/2"
	want2 := generateText(t, h, greedy)
	greedy.Model = "bot"
	if res, err := h.c.Generate(ctx, greedy); err != nil || res.Model != "main.demo.bot/1" || res.Text != want1 {
		t.Errorf("Generate(bot) = %+v, %v; want version 1's %q", res, err, want1)
	}
	resp, b := post(t, h, "/v1/completions", testToken, `{"model":"bot","prompt":"Once upon a time","max_tokens":6,"temperature":0}`)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"model": "main.demo.bot/1"`) || !strings.Contains(string(b), jsonString(want1)) {
		t.Errorf("POST /v1/completions model bot = %d %s, want version 1's %q", resp.StatusCode, b, want1)
	}
	if got := send(t, "GET", h.url+"/v1/models", "", auth); !strings.Contains(got.body, `"id": "bot"`) {
		t.Errorf("GET /v1/models = %s, lacks the endpoint bot", got.body)
	}
	if got := send(t, "GET", h.url+"/v1/models/bot", "", auth); got.status != 200 || !strings.Contains(got.body, `"id": "bot"`) {
		t.Errorf("GET /v1/models/bot = %d %s", got.status, got.body)
	}
	resp, b = post(t, h, "/v1/chat/completions", testToken, `{"model":"no-such-endpoint","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 404 || !strings.Contains(string(b), `"code": "model_not_found"`) || !strings.Contains(string(b), "no-such-endpoint") {
		t.Errorf("chat with an unknown endpoint = %d %s, want 404 model_not_found naming it", resp.StatusCode, b)
	}

	// Moving the alias moves the endpoint.
	if _, err := h.c.SetAlias(ctx, "main.demo.bot", 2, "champion"); err != nil {
		t.Fatal(err)
	}
	if e, err := h.c.GetEndpoint(ctx, "bot"); err != nil || e.Version != 2 || e.ServedModel != "main.demo.bot/2" {
		t.Errorf("GetEndpoint after moving champion = %+v, %v; want version 2", e, err)
	}
	if res, err := h.c.Generate(ctx, greedy); err != nil || res.Model != "main.demo.bot/2" || res.Text != want2 {
		t.Errorf("Generate(bot) after the move = %+v, %v; want version 2's %q", res, err, want2)
	}
	// Without its alias the endpoint is NOT_READY and refuses requests.
	if err := h.c.RemoveAlias(ctx, "main.demo.bot", "champion"); err != nil {
		t.Fatal(err)
	}
	if e, err := h.c.GetEndpoint(ctx, "bot"); err != nil || e.State != client.EndpointNotReady || e.Version != 0 || !strings.Contains(e.StateMessage, "alias champion") {
		t.Errorf("GetEndpoint without its alias = %+v, %v; want NOT_READY naming the alias", e, err)
	}
	resp, b = post(t, h, "/v1/chat/completions", testToken, `{"model":"bot","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 404 || !strings.Contains(string(b), `"code": "model_not_found"`) || !strings.Contains(string(b), "endpoint bot is NOT_READY") {
		t.Errorf("chat with a NOT_READY endpoint = %d %s, want 404 model_not_found naming it", resp.StatusCode, b)
	}

	// Listing pages by name.
	for _, name := range []string{"a-pinned", "c_three", "d4"} {
		if _, err := h.c.CreateEndpoint(ctx, client.CreateEndpointRequest{Name: name, Model: "main.demo.bot/1"}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := h.c.ListEndpoints(ctx, client.PageOptions{Limit: 3})
	if err != nil || len(page.Endpoints) != 3 || page.NextPageToken == "" || page.Endpoints[0].Name != "a-pinned" {
		t.Fatalf("ListEndpoints(limit 3) = %+v, %v", page, err)
	}
	all, err := h.c.Endpoints(ctx)
	var names []string
	for _, e := range all {
		names = append(names, e.Name+":"+e.State)
	}
	if err != nil || !slices.Equal(names, []string{"a-pinned:READY", "bot:NOT_READY", "c_three:READY", "d4:READY"}) {
		t.Errorf("Endpoints = %v, %v", names, err)
	}

	// Deleting an endpoint leaves its model.
	if err := h.c.DeleteEndpoint(ctx, "bot"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.GetEndpoint(ctx, "bot"); client.StatusOf(err) != 404 {
		t.Errorf("GetEndpoint(deleted) = %v, want 404", err)
	}
	if err := h.c.DeleteEndpoint(ctx, "bot"); client.StatusOf(err) != 404 {
		t.Errorf("DeleteEndpoint(deleted) = %v, want 404", err)
	}
	if m, err := h.c.ShowModel(ctx, "main.demo.bot"); err != nil || len(m.Versions) != 2 {
		t.Errorf("ShowModel after deleting its endpoint = %+v, %v; want both versions", m, err)
	}
}

func generateText(t *testing.T, h *harness, req client.GenerateRequest) string {
	t.Helper()
	res, err := h.c.Generate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return res.Text
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// streamed is what a streamed chat completion delivered.
type streamed struct {
	text, finish string
	models       []string
	completion   int
	err          error
}

// streamChat sends a streamed chat completion and reads it to the end;
// it is safe to call from another goroutine.
func streamChat(url, body string) streamed {
	var out streamed
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return streamed{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return streamed{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return streamed{err: fmt.Errorf("status %d %s: %v", resp.StatusCode, b, err)}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var c struct {
			Model   string
			Choices []struct {
				Delta        struct{ Content string }
				FinishReason *string `json:"finish_reason"`
			}
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return streamed{err: fmt.Errorf("chunk %s: %v", data, err)}
		}
		if !slices.Contains(out.models, c.Model) {
			out.models = append(out.models, c.Model)
		}
		for _, ch := range c.Choices {
			out.text += ch.Delta.Content
			if ch.FinishReason != nil {
				out.finish = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			out.completion = c.Usage.CompletionTokens
		}
	}
	return out
}

// TestEndpointAliasMoveInFlight: a request generating on an endpoint when
// its alias moves finishes on the version it started with, whole; a
// request sent after the move is answered by the new version. The serving
// clock, read before each model call, holds the first request in the
// middle of its generation while the alias moves.
func TestEndpointAliasMoveInFlight(t *testing.T) {
	h, _ := servingHarness(t)
	ctx := context.Background()
	cat, err := catalog.New(catalog.Config{Store: h.st, Root: filepath.Join(h.home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	var armed atomic.Bool
	var reads atomic.Int64
	paused, resume := make(chan struct{}), make(chan struct{})
	clock := func() time.Time {
		// Read 1 starts the request, 2 precedes the prefill, 3 and 4 the
		// first two decode steps.
		if armed.Load() && reads.Add(1) == 4 {
			close(paused)
			<-resume
		}
		return time.Now()
	}
	models, err := serving.New(serving.Config{MaxLoaded: 2, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Runs: h.svc, Catalog: cat, Token: testToken, Serving: models})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	c, err := client.New(client.Config{Server: ts.URL, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateEndpoint(ctx, client.CreateEndpointRequest{Name: "live", Model: "main.demo.bot@champion"}); err != nil {
		t.Fatal(err)
	}
	body := `{"model":"%s","messages":[{"role":"user","content":"Tell me a story."}],"max_tokens":24,"temperature":0,
		"stream":true,"stream_options":{"include_usage":true}}`
	want := map[string]streamed{}
	for _, v := range []string{"main.demo.bot/1", "main.demo.bot/2"} {
		want[v] = streamChat(ts.URL, fmt.Sprintf(body, v))
		if w := want[v]; w.err != nil || w.completion < 4 {
			t.Fatalf("%s answers %+v: want at least 4 tokens, for the first request to be held mid-generation", v, w)
		}
	}

	armed.Store(true)
	first := make(chan streamed, 1)
	go func() { first <- streamChat(ts.URL, fmt.Sprintf(body, "live")) }()
	select {
	case <-paused:
	case s := <-first:
		t.Fatalf("the first request ended (%+v) before its second decode step", s)
	case <-time.After(time.Minute):
		t.Fatal("the first request did not reach its second decode step")
	}
	if _, err := c.SetAlias(ctx, "main.demo.bot", 2, "champion"); err != nil {
		t.Fatal(err)
	}
	if e, err := c.GetEndpoint(ctx, "live"); err != nil || e.Version != 2 {
		t.Fatalf("GetEndpoint(live) after the move = %+v, %v; want version 2", e, err)
	}
	second := make(chan streamed, 1)
	go func() { second <- streamChat(ts.URL, fmt.Sprintf(body, "live")) }()
	close(resume)
	for _, tc := range []struct {
		name    string
		got     streamed
		version string
	}{{"in flight across the move", <-first, "main.demo.bot/1"}, {"sent after the move", <-second, "main.demo.bot/2"}} {
		w := want[tc.version]
		if g := tc.got; g.err != nil || !slices.Equal(g.models, []string{tc.version}) || g.text != w.text || g.finish != w.finish ||
			g.completion != w.completion {
			t.Errorf("request %s = %+v; want %s's whole answer %+v", tc.name, g, tc.version, w)
		}
	}
}
