package server

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"hone/client"
)

// A full disk reaches the client as such: 507 Insufficient Storage saying
// "no space left on device" and the path, not a bare 500 "internal error".
// The error is the operating system's own: a write to /dev/full.
func TestNoSpaceIs507(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler), mux: http.NewServeMux(), max: 1 << 20, clock: time.Now}
	s.mux.HandleFunc("POST /api/write", s.handler(201, func(*http.Request) (any, error) {
		if err := os.WriteFile("/dev/full", []byte("weights"), 0o644); err != nil {
			return nil, fmt.Errorf("register main.demo.bot: copy model.safetensors: %w", err)
		}
		return nil, fmt.Errorf("a write to /dev/full succeeded")
	}))
	ts := httptest.NewServer(s)
	defer ts.Close()
	req, _ := http.NewRequest("POST", ts.URL+"/api/write", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e client.Error
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusInsufficientStorage || e.Code != "insufficient_storage" ||
		!strings.Contains(e.Message, "no space left on device") || !strings.Contains(e.Message, "/dev/full") {
		t.Fatalf("a write that ran out of space = %d %+v; want 507 insufficient_storage naming \"no space left on device\" and /dev/full", resp.StatusCode, e)
	}
	if strings.Contains(e.Message, "main.demo.bot") {
		t.Errorf("507 message %q carries the internal context, want only the cause and the path", e.Message)
	}
}
