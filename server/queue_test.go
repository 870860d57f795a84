package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hone/catalog"
	"hone/server"
	"hone/serving"
)

// A completion beyond the serving queue is answered 429 with OpenAI's
// rate_limit_exceeded error, while the running and queued ones go on.
func TestQueueFullIs429(t *testing.T) {
	h, _ := servingHarness(t)
	cat, err := catalog.New(catalog.Config{Store: h.st, Root: filepath.Join(h.home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	models, err := serving.New(serving.Config{MaxBatch: 1, MaxQueue: 1})
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
	ctx, cancel := context.WithCancel(context.Background())
	send := func(maxTokens string, stream bool) (*http.Response, error) {
		body := `{"model":"main.demo.bot/1","prompt":"Once upon a time","max_tokens":` + maxTokens + `,"temperature":0,"stream":` +
			map[bool]string{true: "true", false: "false"}[stream] + `}`
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/v1/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+testToken)
		return http.DefaultClient.Do(req)
	}
	long, err := send("2000", true)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Body.Close()
	if _, err := bufio.NewReader(long.Body).ReadString('\n'); err != nil { // the stream has begun
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if resp, err := send("5", false); err == nil {
			resp.Body.Close()
		}
	})
	for models.Queued() != 1 {
		time.Sleep(time.Millisecond)
	}
	resp, b := post(t, &h2, "/v1/completions", testToken, `{"model":"main.demo.bot/1","prompt":"hi","max_tokens":1}`)
	var e struct {
		Error struct{ Type, Code, Message string }
	}
	if err := json.Unmarshal(b, &e); err != nil || resp.StatusCode != http.StatusTooManyRequests ||
		e.Error.Code != "rate_limit_exceeded" || e.Error.Type != "requests" || !strings.Contains(e.Error.Message, "--max-queue") {
		t.Errorf("completion beyond the queue = %d %s, want 429 rate_limit_exceeded naming --max-queue", resp.StatusCode, b)
	}
	cancel()
	wg.Wait()
}
