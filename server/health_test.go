package server_test

import (
	"context"
	"encoding/json"
	"fmt"
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

// A database whose disk is full is answered 507 naming the database file,
// not a bare 500.
func TestDatabaseFullIs507(t *testing.T) {
	st, path := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	ctx := context.Background()
	var pages int
	if err := st.SQLDB().QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SQLDB().ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages)); err != nil {
		t.Fatal(err)
	}
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		err = h.c.CreateCatalog(ctx, fmt.Sprintf("c%d", i), strings.Repeat("x", 4000))
	}
	if client.StatusOf(err) != 507 || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), path) {
		t.Fatalf("creating catalogs in a full database: %v (status %d); want 507 naming no space left on device and %s", err, client.StatusOf(err), path)
	}
}
