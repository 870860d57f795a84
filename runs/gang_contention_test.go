package runs_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/catalog"
	"hone/client"
	"hone/modelref"
	"hone/runs"
	"hone/store"
	"hone/store/storetest"
)

// Two 2-node runs queued before two workers of concurrency 1 start
// together, so that each worker takes one run's job: each would lead one
// rendezvous and wait in vain for the other worker, until both time out
// and the same can happen again. Instead the younger run yields its worker
// to the older one (or its worker joins the older one without claiming it),
// the runs train one after the other and both complete, and no rendezvous
// times out (its timeout is longer than the test waits).
func TestGangRunsCompetingForWorkers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store, _ string) {
		ctx := context.Background()
		home, data, model := fixture(t)
		cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(home, "catalog")})
		if err != nil {
			t.Fatal(err)
		}
		var svcs []*runs.Service
		res, _ := modelref.New(modelref.Config{HFHome: filepath.Join(home, "hf"), Catalog: cat,
			Confine: func(p string) (string, error) { return svcs[0].Confine(p) }})
		for i := range 2 {
			id := fmt.Sprintf("worker-%d", i)
			svc, err := runs.New(ctx, runs.Config{Store: st, Catalog: cat, Models: res, Home: home, DataRoots: []string{data},
				Work: true, WorkerID: id, FetchPoll: 50 * time.Millisecond,
				Gang: runs.GangConfig{RendezvousTimeout: 5 * time.Minute, CollectiveTimeout: 10 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			svcs = append(svcs, svc)
			// Known to the queue, so that runs may ask for two nodes before
			// the workers start.
			if err := st.SeeWorker(ctx, store.Worker{ID: id, Host: "127.0.0.1", StartedAt: time.Now(), SeenAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		c := serveAPI(t, svcs[0], cat)
		req := request(data, model)
		req.TrainingDuration, req.BatchRows, req.GradAccum, req.Nodes = "4ba", 1, 2, 2
		req.EvalPrompts = nil
		var names []string
		for range 2 {
			r, err := c.CreateRun(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, r.Name)
		}
		for _, svc := range svcs {
			if err := svc.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { svc.Stop(ctx) })
		}

		deadline := time.Now().Add(4 * time.Minute)
		var events []string
		for done := 0; done < len(names); time.Sleep(100 * time.Millisecond) {
			done, events = 0, nil
			for _, name := range names {
				r, err := c.GetRun(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range r.Events {
					events = append(events, name+": "+e.Type+" "+e.Message)
					if e.Type == client.StatusQueued && strings.Contains(e.Message, "did not complete within") {
						t.Fatalf("run %s: a rendezvous timed out: %s", name, e.Message)
					}
				}
				switch r.Status {
				case client.StatusCompleted:
					done++
				case client.StatusFailed, client.StatusStopped:
					t.Fatalf("run %s %s: %s", name, r.Status, r.Error)
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("runs did not complete; events:\n%s", strings.Join(events, "\n"))
			}
		}
		for _, e := range events {
			if strings.Contains(e, "yielded") {
				t.Log(e)
			}
		}
	})
}
