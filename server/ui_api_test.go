package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"hone/client"
	"hone/store/storetest"
)

// TestValidateRun: the dry run answers what CreateRun would, data
// included, and creates nothing (no run, no queue job).
func TestValidateRun(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	ctx := context.Background()
	good := h.request(t, h.writeData(t, "good.jsonl"))
	bad := h.request(t, h.writeData(t, "bad.jsonl", `{"messages":[]}`, `{"messages": [`))
	noSchema := good
	noSchema.RegisterTo = "main.nope"
	for _, tc := range []struct {
		name    string
		req     client.CreateRunRequest
		ok      bool
		errText string
	}{
		{"good", good, true, ""},
		{"bad data", bad, false, "bad.jsonl:2"},
		{"missing schema", noSchema, false, "schema main.nope does not exist"},
	} {
		v, err := h.c.ValidateRun(ctx, tc.req)
		if err != nil {
			t.Fatalf("%s: ValidateRun: %v", tc.name, err)
		}
		if v.OK != tc.ok || !strings.Contains(v.Error, tc.errText) {
			t.Errorf("%s: ValidateRun = ok %v error %q, want ok %v error containing %q", tc.name, v.OK, v.Error, tc.ok, tc.errText)
		}
		if tc.ok {
			var summary string
			if err := json.Unmarshal(v.Report, &summary); err != nil || summary != "1 conversations" {
				t.Errorf("%s: report %s (%v), want the trainer's summary", tc.name, v.Report, err)
			}
			if v.Request.TaskType != client.TaskChatCompletion || v.Request.LearningRate == 0 {
				t.Errorf("%s: request without the server's defaults: %+v", tc.name, v.Request)
			}
		}
	}
	list, err := h.c.ListRuns(ctx, client.ListRunsOptions{})
	if err != nil || len(list.Runs) != 0 {
		t.Fatalf("after validating: runs %+v, %v; want none", list, err)
	}
	if n := h.riverJobs(t); n != 0 {
		t.Fatalf("after validating: %d queue jobs, want none", n)
	}
	// A request the decoder refuses is an error of the call, not a report.
	resp, err := http.Post(h.url+"/api/runs/validate", "application/json", strings.NewReader(`{"modle": "x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown field: status %d, want 400", resp.StatusCode)
	}
}

func TestCatalogTree(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	ctx := context.Background()
	if err := h.c.CreateCatalog(ctx, "empty", "nothing here"); err != nil {
		t.Fatal(err)
	}
	run, err := h.c.CreateRun(ctx, h.request(t, h.writeData(t, "chat.jsonl")))
	if err != nil {
		t.Fatal(err)
	}
	h.wait(t, run.Name, client.StatusCompleted)
	tree, err := h.c.CatalogTree(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(tree)
	want := `{"catalogs":[{"name":"empty","comment":"nothing here","schemas":[]},` +
		`{"name":"main","schemas":[{"name":"main.demo","models":["main.demo.bot"]}]}]}`
	if string(got) != want {
		t.Fatalf("CatalogTree = %s\nwant %s", got, want)
	}
}

// TestUIWithToken: the pages load without the token (they hold no data);
// the API they call still requires it.
func TestUIWithToken(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{token: "s3cret"})
	for path, want := range map[string]int{"/": 200, "/ui/app.js": 200, "/ui/config.json": 200, "/api/runs": 401, "/api/catalog/tree": 401} {
		resp, err := http.Get(h.url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s without the token: %d, want %d", path, resp.StatusCode, want)
		}
		if path == "/ui/config.json" && string(body) != `{"token_required":true}` {
			t.Errorf("config.json = %s, want the token required", body)
		}
	}
	if _, err := h.c.CatalogTree(context.Background()); err != nil {
		t.Fatalf("CatalogTree with the token: %v", err)
	}
}
