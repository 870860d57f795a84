package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"hone/client"
	"hone/internal/testassets"
	"hone/store/storetest"
)

type rawResponse struct {
	status int
	body   string
}

// send makes one request as a browser or a script would, without the
// client package's headers.
func send(t *testing.T, method, u, body string, header map[string]string) rawResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResponse{resp.StatusCode, string(b)}
}

// TestBrowserRequests: without a token, a web page cannot drive the API
// (a foreign Origin, a DNS-rebound Host, a text/plain body), while hone's
// client and a same-origin page still can.
func TestBrowserRequests(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	ctx := context.Background()
	req := h.request(t, h.writeData(t, "chat.jsonl"))
	req.TrainingDuration = "100000ba"
	run, err := h.c.CreateRun(ctx, req)
	if err != nil {
		t.Fatalf("the legitimate client: %v", err)
	}
	t.Cleanup(func() { h.c.CancelRuns(ctx, client.CancelRequest{Names: []string{run.Name}}) })
	h.wait(t, run.Name, client.StatusRunning)
	port := mustPort(t, h.url)
	cancel := `{"names":["` + run.Name + `"]}`

	for _, tc := range []struct {
		name, method, path, body string
		header                   map[string]string
		want                     int
		wantMsg                  string
	}{
		{"cross-site form post", "POST", "/api/runs/cancel", cancel,
			map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403, "Origin"},
		{"cross-site JSON post", "POST", "/api/runs/cancel", cancel,
			map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, 403, "Origin"},
		{"opaque origin", "POST", "/api/runs/" + run.Name + "/cancel", "", map[string]string{"Origin": "null"}, 403, "Origin"},
		{"loopback page on another port", "GET", "/api/runs", "", map[string]string{"Origin": "http://127.0.0.1:1"}, 403, "Origin"},
		{"text/plain without origin", "POST", "/api/runs/cancel", cancel, map[string]string{"Content-Type": "text/plain"}, 415,
			"Content-Type: application/json"},
		{"no content type", "POST", "/api/runs/cancel", cancel, nil, 415, "application/json"},
		{"DNS rebinding", "GET", "/api/runs", "", map[string]string{"Host": "evil.example:8080"}, 403, "Host"},
		{"DNS rebinding without port", "POST", "/api/runs/cancel", cancel,
			map[string]string{"Host": "evil.example", "Content-Type": "application/json"}, 403, "Host"},
		{"DNS rebinding health", "GET", "/api/health", "", map[string]string{"Host": "evil.example:" + port}, 403, "Host"},
		{"localhost", "GET", "/api/runs", "", map[string]string{"Host": "localhost:" + port}, 200, ""},
		{"localhost without port", "GET", "/api/runs", "", map[string]string{"Host": "localhost"}, 200, ""},
		{"same-origin page", "GET", "/api/runs", "", map[string]string{"Origin": "http://127.0.0.1:" + port}, 200, ""},
		{"same-origin page by name", "GET", "/api/runs", "",
			map[string]string{"Origin": "http://localhost:" + port, "Host": "localhost:" + port}, 200, ""},
		{"cross-site file upload", "PUT", "/api/fs/files/Volumes/main/demo/files/x.jsonl", "{}",
			map[string]string{"Content-Type": "text/plain"}, 415, "application/octet-stream"},
		{"JSON with charset", "POST", "/api/runs/cancel", `{"names":[]}`,
			map[string]string{"Content-Type": "application/json; charset=utf-8"}, 400, "name runs"},
	} {
		got := send(t, tc.method, h.url+tc.path, tc.body, tc.header)
		var e client.Error
		json.Unmarshal([]byte(got.body), &e)
		if got.status != tc.want || (tc.wantMsg != "" && !strings.Contains(e.Message, tc.wantMsg)) {
			t.Errorf("%s: %s %s = %d %s, want %d with %q", tc.name, tc.method, tc.path, got.status, got.body, tc.want, tc.wantMsg)
		}
	}
	if r, _ := h.c.GetRun(ctx, run.Name); r.Status != client.StatusRunning {
		t.Fatalf("refused cancels changed the run: %s", r.Status)
	}

	// /v1 refuses with OpenAI's error body.
	for _, hd := range []map[string]string{
		{"Host": "evil.example:8080", "Content-Type": "application/json"},
		{"Origin": "https://evil.example", "Content-Type": "application/json"},
		{"Content-Type": "text/plain"},
	} {
		got := send(t, "POST", h.url+"/v1/chat/completions", `{"model":"main.demo.bot/1","messages":[]}`, hd)
		var oe struct {
			Error struct{ Message, Type, Code string } `json:"error"`
		}
		if err := json.Unmarshal([]byte(got.body), &oe); err != nil || (got.status != 403 && got.status != 415) || oe.Error.Message == "" {
			t.Errorf("POST /v1/chat/completions with %v = %d %s, want 403/415 with an OpenAI error body", hd, got.status, got.body)
		}
	}
}

// TestBrowserRequestsWithToken: with a token, API clients are not held to
// loopback names, but bodies must still be declared JSON.
func TestBrowserRequestsWithToken(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{token: testToken})
	auth := "Bearer " + testToken
	if got := send(t, "GET", h.url+"/api/runs", "", map[string]string{"Host": "hone.example:8080", "Authorization": auth}); got.status != 200 {
		t.Errorf("token and a proxy's Host = %d %s, want 200", got.status, got.body)
	}
	if got := send(t, "POST", h.url+"/api/runs/cancel", `{"names":["x"]}`,
		map[string]string{"Content-Type": "text/plain", "Authorization": auth}); got.status != 415 {
		t.Errorf("token and text/plain = %d %s, want 415", got.status, got.body)
	}
}

func mustPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestInternalErrorHidden: a 5xx tells the client a request id, not the
// internal error (SQL, paths); the log has both.
func TestInternalErrorHidden(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	var logs syncBuffer
	h := newHarness(t, st, harnessOpts{logger: slog.New(slog.NewTextHandler(&logs, nil))})
	st.Close() // every query now fails inside the store
	for _, path := range []string{"/api/runs", "/api/experiments", "/v1/models"} {
		req, _ := http.NewRequest("GET", h.url+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id := resp.Header.Get("X-Request-Id")
		body := string(b)
		if resp.StatusCode != 500 || id == "" || !strings.Contains(body, "internal error (request id "+id+")") ||
			strings.Contains(body, "closed") || strings.Contains(body, "store") || strings.Contains(body, h.home) {
			t.Errorf("GET %s = %d %s (request id %q), want 500 saying only \"internal error\" and the request id", path, resp.StatusCode, body, id)
		}
		if !strings.Contains(logs.String(), "request_id="+id) || !strings.Contains(logs.String(), "database is closed") {
			t.Errorf("GET %s: the log lacks request id %s with the real error:\n%s", path, id, logs.String())
		}
	}
}

// TestOpenAIClientPassesGuard: the official openai npm client (under node,
// as TestOpenAIClient runs it) is neither a foreign Host nor a foreign
// Origin to a server without a token, and declares its bodies JSON.
func TestOpenAIClientPassesGuard(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the OpenAI client test (scripts/install-deps.sh installs it): %v", err)
	}
	module := testassets.Path(t, "openai/package/index.mjs")
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	script := `import { pathToFileURL } from 'node:url';
const { default: OpenAI } = await import(pathToFileURL(process.env.OPENAI_MODULE).href);
const client = new OpenAI({ baseURL: process.env.HONE_BASE_URL, apiKey: 'unused', maxRetries: 0 });
const ids = [];
for await (const m of await client.models.list()) ids.push(m.id);
try {
  await client.chat.completions.create({ model: 'main.demo.nope/1', messages: [{ role: 'user', content: 'hi' }] });
} catch (e) { console.log(JSON.stringify({ ids, status: e.status })); }`
	cmd := exec.Command(node, "--input-type=module", "-e", script)
	cmd.Env = append(os.Environ(), "OPENAI_MODULE="+module, "HONE_BASE_URL="+h.url+"/v1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var got struct {
		IDs    []string `json:"ids"`
		Status int      `json:"status"`
	}
	if err := json.Unmarshal(out, &got); err != nil || got.IDs == nil || got.Status != 404 {
		t.Fatalf("openai client without a token saw %s (%v), want an empty model list and a 404 for an unknown model", out, err)
	}
}
