package runs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"hone/catalog"
	"hone/client"
	"hone/modelref"
	"hone/runs"
	"hone/server"
	"hone/store"
	"hone/store/storetest"
	"hone/train"
)

// A PostgreSQL restart in the middle of a run loses nothing: training goes
// on, its records wait in the run's journal and arrive once the database
// answers again. Afterwards every step's metric and every checkpoint's
// event are stored once, and the checkpoint list names exactly the
// checkpoints on disk (older ones were pruned while the database was
// away). /api/health says 503 while the database does not answer, 200
// before and after; /api/livez stays 200.
func TestPostgresRestartDuringRun(t *testing.T) {
	pg := storetest.StartPrivatePostgres(t)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DSN: pg.DSN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	home, data, model := fixture(t)
	c, url := serveWithRetry(t, st, home, data)

	const steps, every, during = 24, 4, 12
	req := request(data, model)
	req.EvalDataPath, req.EvalPrompts = "", nil
	req.TrainingDuration, req.CheckpointEvery, req.KeepCheckpoints, req.ContextLength = fmt.Sprintf("%dba", steps), every, 2, 64
	run, err := c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := health(t, url, "/api/health"); code != 200 {
		t.Fatalf("/api/health with the database up = %d, want 200", code)
	}
	// Stop the database once training has begun.
	var before int
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if m, err := st.LatestStep(ctx, run.Name); err == nil && m.Step >= 2 {
			before = m.Step
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("training did not start")
		}
	}
	pg.Stop()
	if m, err := st.LatestStep(context.Background(), run.Name); err == nil {
		t.Fatalf("the store answers after the stop: step %d", m.Step)
	}
	code, body := health(t, url, "/api/health")
	if code != 503 || !strings.Contains(body, "the database does not answer") || strings.Contains(body, "127.0.0.1") {
		t.Errorf("/api/health with the database down = %d %s; want 503 saying the database does not answer, no address", code, body)
	}
	if code, _ := health(t, url, "/api/livez"); code != 200 {
		t.Errorf("/api/livez with the database down = %d, want 200", code)
	}
	// Training goes on meanwhile: wait until it has saved (and pruned)
	// checkpoints without the database, well within the lease.
	work := filepath.Join(home, "runs", run.Name, "work")
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		cks, _ := train.Checkpoints(work)
		if len(cks) > 0 && cks[len(cks)-1].Step >= during {
			break
		}
		if time.Now().After(deadline) {
			pg.Start()
			r := waitStatus(t, c, run.Name, time.Minute, client.StatusCompleted, client.StatusFailed)
			t.Fatalf("training saved no checkpoint of step %d while the database was away (checkpoints %+v); the run ended %s: %s",
				during, cks, r.Status, r.Error)
		}
	}
	if before >= during {
		t.Fatalf("step %d was recorded before the database stopped: the outage came too late to test anything", before)
	}
	time.Sleep(time.Second) // the worker retries meanwhile
	pg.Start()

	done := waitStatus(t, c, run.Name, 3*time.Minute, client.StatusCompleted, client.StatusFailed)
	if done.Status != client.StatusCompleted {
		t.Fatalf("run %s: %s", done.Status, done.Error)
	}
	if code, _ := health(t, url, "/api/health"); code != 200 {
		t.Errorf("/api/health after the restart = %d, want 200", code)
	}
	ms, err := st.ListSteps(ctx, run.Name, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != steps {
		t.Errorf("%d step metrics stored, want %d", len(ms), steps)
	}
	for i, m := range ms {
		if m.Step != i+1 {
			t.Fatalf("step metrics: row %d is step %d (steps %d..%d stored)", i, m.Step, ms[0].Step, ms[len(ms)-1].Step)
		}
	}
	evs, err := st.ListEvents(ctx, run.Name, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ckptEvents []string
	for _, e := range evs {
		if e.Type == "CHECKPOINT" {
			ckptEvents = append(ckptEvents, strings.Fields(e.Message)[1])
		}
	}
	var want []string
	for s := every; s <= steps; s += every {
		want = append(want, fmt.Sprint(s))
	}
	if !slices.Equal(ckptEvents, want) {
		t.Errorf("CHECKPOINT events of steps %v, want each of %v once", ckptEvents, want)
	}
	if last := evs[len(evs)-1]; last.Type != string(store.StatusCompleted) {
		t.Errorf("last event %s %q, want the COMPLETED one after the delivered records", last.Type, last.Message)
	}
	listed, err := st.ListCheckpoints(ctx, run.Name)
	if err != nil {
		t.Fatal(err)
	}
	disk, err := train.Checkpoints(work)
	if err != nil {
		t.Fatal(err)
	}
	var ls, ds []int
	for _, c := range listed {
		ls = append(ls, c.Step)
	}
	for _, c := range disk {
		ds = append(ds, c.Step)
	}
	if !slices.Equal(ls, ds) || len(ds) != 2 {
		t.Errorf("checkpoints listed %v, on disk %v; want the same two", ls, ds)
	}
	t.Logf("database stopped after step %d was recorded; %d steps trained in all", before, steps)
}

// serveWithRetry is serveInProcess with quick store retries and a lease
// longer than the outage; it also returns the server's URL.
func serveWithRetry(t *testing.T, st *store.Store, home, data string) (*client.Client, string) {
	t.Helper()
	ctx := context.Background()
	cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	var svc *runs.Service
	res, _ := modelref.New(modelref.Config{HFHome: filepath.Join(home, "hf"), Catalog: cat,
		Confine: func(p string) (string, error) { return svc.Confine(p) }})
	svc, err = runs.New(ctx, runs.Config{Store: st, Catalog: cat, Models: res, Home: home,
		DataRoots: []string{data}, Work: true, FetchPoll: 50 * time.Millisecond, RetryEvery: 50 * time.Millisecond,
		LeaseTTL: 2 * time.Minute, // outlives the outage on a slow machine: the fence needs no store meanwhile
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Stop(ctx) })
	srv, _ := server.New(server.Config{Runs: svc, Catalog: cat})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	c, _ := client.New(client.Config{Server: ts.URL})
	for _, n := range []string{"main", "main.demo"} {
		if err := c.CreateCatalog(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	return c, ts.URL
}

func health(t *testing.T, url, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h client.Health
	json.NewDecoder(resp.Body).Decode(&h)
	b, _ := json.Marshal(h)
	return resp.StatusCode, string(b)
}
