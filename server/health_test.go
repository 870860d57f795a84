package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"hone/client"
	"hone/store/storetest"
)

// /api/health says whether the store answers (503 with the reason when it
// does not); /api/livez only says the process serves.
func TestHealthChecksStore(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	get := func(path string) (int, client.Health) {
		resp, err := http.Get(h.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out client.Health
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, out
	}
	if code, out := get("/api/health"); code != 200 || out.Status != "ok" || out.Store != "ok" {
		t.Fatalf("/api/health = %d %+v, want 200 ok with the store ok", code, out)
	}
	st.Close() // the store no longer answers
	if code, out := get("/api/health"); code != 503 || out.Store != "unavailable" || !strings.Contains(out.Reason, "the database does not answer") ||
		strings.Contains(out.Reason, h.home) {
		t.Errorf("/api/health with the store closed = %d %+v, want 503 saying the database does not answer (no paths)", code, out)
	}
	if code, out := get("/api/livez"); code != 200 || out.Status != "ok" {
		t.Errorf("/api/livez with the store closed = %d %+v, want 200 ok", code, out)
	}
}
