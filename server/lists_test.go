package server_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"hone/client"
	"hone/store/storetest"
)

// TestLists: every list in a response is [] when empty, never null, and
// growing lists page with limit and page_token.
func TestLists(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	ctx := context.Background()
	emptyLists := func(path string, keys ...string) {
		t.Helper()
		got := send(t, "GET", h.url+path, "", nil)
		var body map[string]json.RawMessage
		if err := json.Unmarshal([]byte(got.body), &body); err != nil || got.status != 200 {
			t.Fatalf("GET %s = %d %s", path, got.status, got.body)
		}
		for _, k := range keys {
			if string(body[k]) != "[]" {
				t.Errorf("GET %s: %q is %s, want []", path, k, body[k])
			}
		}
	}
	emptyLists("/api/runs", "runs")
	emptyLists("/api/experiments", "experiments")

	// A run without checkpoints, evaluations or eval prompts.
	req := h.request(t, h.writeData(t, "chat.jsonl"))
	req.CheckpointEvery, req.EvalPrompts, req.TrainingDuration = 0, nil, "5ba"
	run, err := h.c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	done := h.wait(t, run.Name, client.StatusCompleted)
	emptyLists("/api/runs/"+run.Name+"/checkpoints", "checkpoints")
	emptyLists("/api/runs/"+run.Name+"/prompt-outputs", "prompt_outputs")
	emptyLists("/api/runs/"+run.Name+"/metrics", "evals")

	// Events page two at a time and add up to the run's history.
	var paged []client.Event
	o := client.ListEventsOptions{PageOptions: client.PageOptions{Limit: 2}}
	for pages := 0; ; pages++ {
		l, err := h.c.ListEvents(ctx, run.Name, o)
		if err != nil || len(l.Events) > 2 || pages > 50 {
			t.Fatalf("ListEvents(%+v) = %d events, %v", o, len(l.Events), err)
		}
		paged = append(paged, l.Events...)
		if l.NextPageToken == "" {
			break
		}
		o.PageToken = l.NextPageToken
	}
	if !reflect.DeepEqual(paged, done.Events) || len(paged) < 4 {
		t.Fatalf("paged events = %+v, want the run's %+v", paged, done.Events)
	}
	// Metrics page by steps; the client follows the pages.
	first, err := h.c.ListMetrics(ctx, run.Name, client.PageOptions{Limit: 2})
	if err != nil || len(first.Steps) != 2 || first.NextPageToken == "" {
		t.Fatalf("ListMetrics(limit 2) = %+v, %v", first, err)
	}
	if all, err := h.c.Metrics(ctx, run.Name); err != nil || len(all.Steps) != 5 || all.Steps[4].Step != 5 {
		t.Fatalf("Metrics = %+v, %v", all, err)
	}
	for _, q := range []string{"limit=-1", "limit=1001", "limit=x", "page_token=garbage!"} {
		got := send(t, "GET", h.url+"/api/runs/"+run.Name+"/events?"+q, "", nil)
		if got.status != 400 || !strings.Contains(got.body, strings.Split(q, "=")[0]) {
			t.Errorf("events?%s = %d %s, want 400 naming the parameter", q, got.status, got.body)
		}
	}
	// A token from one listing is refused by another.
	ev, _ := h.c.ListEvents(ctx, run.Name, client.ListEventsOptions{PageOptions: client.PageOptions{Limit: 1}})
	if _, err := h.c.ListExperiments(ctx, client.PageOptions{PageToken: ev.NextPageToken}); client.StatusOf(err) != 400 {
		t.Errorf("ListExperiments(an events token) = %v, want 400", err)
	}
}
