package store_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"hone/store"
	"hone/store/storetest"
)

// TestConformance is the one suite every backend must pass.
func TestConformance(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store, _ string) {
		t.Run("runs", func(t *testing.T) { testRuns(t, s) })
		t.Run("list", func(t *testing.T) { testList(t, s) })
		t.Run("tracking", func(t *testing.T) { testTracking(t, s) })
		t.Run("catalog", func(t *testing.T) { testCatalog(t, s) })
		t.Run("tx", func(t *testing.T) { testTx(t, s) })
	})
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testRuns(t *testing.T, s *store.Store) {
	ctx := context.Background()
	r := &store.Run{Name: "r1", User: "ann", ExperimentPath: "/Users/ann/hone", Status: store.StatusQueued,
		Params: `{"a":1}`, RegisterTo: "main.demo", JobID: 7, CreatedAt: t0}
	if err := s.InsertRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertRun(ctx, r); !errors.Is(err, store.ErrExists) {
		t.Fatalf("InsertRun(dup) = %v, want ErrExists", err)
	}
	got, err := s.GetRun(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if got.User != "ann" || got.Status != store.StatusQueued || got.JobID != 7 || !got.CreatedAt.Equal(t0) || got.Params != `{"a":1}` {
		t.Fatalf("GetRun = %+v", got)
	}
	if _, err := s.GetRun(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetRun(nope) = %v, want ErrNotFound", err)
	}
	st := store.StatusStarting
	owner := "w1"
	until := t0.Add(time.Minute)
	ok, err := s.UpdateRun(ctx, "r1", store.RunCond{Statuses: []store.RunStatus{store.StatusQueued}, JobID: 7, LeaseFreeAt: t0, Owner: owner},
		store.RunUpdate{Status: &st, LeaseOwner: &owner, LeaseUntil: &until, StartedAt: &t0})
	if err != nil || !ok {
		t.Fatalf("UpdateRun(claim) = %v, %v", ok, err)
	}
	// A second worker cannot claim while the lease is live...
	other := "w2"
	ok, err = s.UpdateRun(ctx, "r1", store.RunCond{LeaseFreeAt: t0.Add(30 * time.Second), Owner: other}, store.RunUpdate{LeaseOwner: &other})
	if err != nil || ok {
		t.Fatalf("UpdateRun(steal live lease) = %v, %v; want false", ok, err)
	}
	// ...but can once it has expired.
	params := `{"a":2}`
	ok, err = s.UpdateRun(ctx, "r1", store.RunCond{LeaseFreeAt: t0.Add(2 * time.Minute), Owner: other}, store.RunUpdate{LeaseOwner: &other, Params: &params})
	if err != nil || !ok {
		t.Fatalf("UpdateRun(expired lease) = %v, %v; want true", ok, err)
	}
	ok, err = s.UpdateRun(ctx, "r1", store.RunCond{JobID: 8}, store.RunUpdate{Status: &st})
	if err != nil || ok {
		t.Fatalf("UpdateRun(wrong job) = %v, %v; want false", ok, err)
	}
	if _, err := s.UpdateRun(ctx, "nope", store.RunCond{}, store.RunUpdate{Status: &st}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateRun(nope) = %v, want ErrNotFound", err)
	}
	got, _ = s.GetRun(ctx, "r1")
	if got.Status != store.StatusStarting || got.LeaseOwner != "w2" || !got.LeaseUntil.Equal(until) || !got.StartedAt.Equal(t0) || got.Params != params {
		t.Fatalf("after updates: %+v", got)
	}
	if err := s.AddEvent(ctx, "r1", store.Event{Time: t0, Type: "CREATED", Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRun(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRun(ctx, "r1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteRun twice = %v, want ErrNotFound", err)
	}
	if ev, _ := s.ListEvents(ctx, "r1", 0); len(ev) != 0 {
		t.Fatalf("events survive delete: %v", ev)
	}
}

func testList(t *testing.T, s *store.Store) {
	ctx := context.Background()
	for i := range 7 {
		user := "bob"
		if i%2 == 1 {
			user = "cat"
		}
		status := store.StatusQueued
		if i == 3 {
			status = store.StatusFailed
		}
		r := &store.Run{Name: "list-" + string(rune('a'+i)), User: user, ExperimentPath: "/e/" + user, Status: status,
			Params: "{}", CreatedAt: t0.Add(time.Duration(i) * time.Hour)}
		if err := s.InsertRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	names := func(rs []store.Run) (out []string) {
		for _, r := range rs {
			out = append(out, r.Name)
		}
		return out
	}
	var all []string
	tok := ""
	for page := 0; ; page++ {
		rs, next, err := s.ListRuns(ctx, store.RunFilter{Limit: 3, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, names(rs)...)
		if next == "" {
			break
		}
		if page > 5 {
			t.Fatal("pagination does not end")
		}
		tok = next
	}
	want := []string{"list-g", "list-f", "list-e", "list-d", "list-c", "list-b", "list-a"}
	if len(all) < 7 || !equal(all[:7], want) {
		t.Fatalf("paged ListRuns = %v, want prefix %v", all, want)
	}
	rs, _, err := s.ListRuns(ctx, store.RunFilter{User: "cat"})
	if err != nil || !equal(names(rs), []string{"list-f", "list-d", "list-b"}) {
		t.Fatalf("ListRuns(user=cat) = %v, %v", names(rs), err)
	}
	rs, _, _ = s.ListRuns(ctx, store.RunFilter{ExperimentPath: "/e/bob", CreatedAfter: t0.Add(time.Hour), CreatedBefore: t0.Add(6 * time.Hour)})
	if !equal(names(rs), []string{"list-e", "list-c"}) {
		t.Fatalf("ListRuns(bob, after, before) = %v", names(rs))
	}
	rs, _, _ = s.ListRuns(ctx, store.RunFilter{Statuses: []store.RunStatus{store.StatusFailed}})
	if !equal(names(rs), []string{"list-d"}) {
		t.Fatalf("ListRuns(FAILED) = %v", names(rs))
	}
	if _, _, err := s.ListRuns(ctx, store.RunFilter{PageToken: "!!"}); !errors.Is(err, store.ErrBadPageToken) {
		t.Fatalf("ListRuns(bad token) = %v", err)
	}
}

func testTracking(t *testing.T, s *store.Store) {
	ctx := context.Background()
	run := "track"
	if err := s.InsertRun(ctx, &store.Run{Name: run, Status: store.StatusRunning, Params: "{}", ExperimentPath: "/x", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		m := store.StepMetric{Step: i, TotalSteps: 3, Epoch: float64(i) / 3, Loss: 3 - float64(i)*0.5, LR: 1e-4,
			GradNorm: 0.5, TokensPerSec: 100, TokensSeen: int64(i) * 64, Elapsed: time.Duration(i) * time.Second, Time: t0}
		if i == 2 {
			m.Loss = math.NaN()
		}
		if err := s.RecordStep(ctx, run, m); err != nil {
			t.Fatal(err)
		}
	}
	// A resumed run re-reports step 3: it replaces the row.
	if err := s.RecordStep(ctx, run, store.StepMetric{Step: 3, TotalSteps: 3, Loss: 1.25, LR: 2e-4, TokensSeen: 192, Time: t0}); err != nil {
		t.Fatal(err)
	}
	steps, err := s.ListSteps(ctx, run, 0)
	if err != nil || len(steps) != 3 || !math.IsNaN(steps[1].Loss) || steps[2].Loss != 1.25 || steps[0].Elapsed != time.Second {
		t.Fatalf("ListSteps = %+v, %v", steps, err)
	}
	if tail, _ := s.ListSteps(ctx, run, 2); len(tail) != 1 {
		t.Fatalf("ListSteps(after 2) = %v", tail)
	}
	last, err := s.LatestStep(ctx, run)
	if err != nil || last.Step != 3 || last.LR != 2e-4 {
		t.Fatalf("LatestStep = %+v, %v", last, err)
	}
	if _, err := s.LatestStep(ctx, "none"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("LatestStep(none) = %v", err)
	}
	if err := s.RecordEval(ctx, run, store.EvalMetric{Step: 2, Loss: 1.5, Perplexity: math.Exp(1.5), TokenAccuracy: 0.4, Time: t0}); err != nil {
		t.Fatal(err)
	}
	if ev, err := s.ListEvals(ctx, run); err != nil || len(ev) != 1 || ev[0].TokenAccuracy != 0.4 {
		t.Fatalf("ListEvals = %+v, %v", ev, err)
	}
	for _, st := range []int{2, 1} {
		if err := s.RecordCheckpoint(ctx, run, store.Checkpoint{Step: st, Epoch: 0.5, Dir: "/ck/" + string(rune('0'+st)), Time: t0}); err != nil {
			t.Fatal(err)
		}
	}
	if cks, err := s.ListCheckpoints(ctx, run); err != nil || len(cks) != 2 || cks[0].Step != 1 || cks[1].Dir != "/ck/2" {
		t.Fatalf("ListCheckpoints = %+v, %v", cks, err)
	}
	outs := []store.PromptOutput{{Step: 2, Index: 0, Prompt: "p0", Output: "o0", Time: t0}, {Step: 2, Index: 1, Prompt: "p1", Output: "o1", Time: t0}}
	if err := s.RecordPromptOutputs(ctx, run, outs); err != nil {
		t.Fatal(err)
	}
	if po, err := s.ListPromptOutputs(ctx, run); err != nil || len(po) != 2 || po[1].Output != "o1" {
		t.Fatalf("ListPromptOutputs = %+v, %v", po, err)
	}
	for i, typ := range []string{"A", "B", "C"} {
		if err := s.AddEvent(ctx, run, store.Event{Time: t0.Add(time.Duration(i) * time.Second), Type: typ, Message: "m" + typ}); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := s.ListEvents(ctx, run, 0)
	if err != nil || len(ev) != 3 || ev[2].Type != "C" || !ev[1].Time.Equal(t0.Add(time.Second)) {
		t.Fatalf("ListEvents = %+v, %v", ev, err)
	}
	if tail, _ := s.ListEvents(ctx, run, ev[0].ID); len(tail) != 2 {
		t.Fatalf("ListEvents(after first) = %v", tail)
	}
	for range 2 {
		if err := s.EnsureExperiment(ctx, store.Experiment{Path: "/x", User: "ann", CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
	}
	exps, err := s.ListExperiments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range exps {
		if e.Path == "/x" {
			found = e.Runs == 1 && e.User == "ann"
		}
	}
	if !found {
		t.Fatalf("ListExperiments = %+v", exps)
	}
}

func testCatalog(t *testing.T, s *store.Store) {
	ctx := context.Background()
	if err := s.CreateSchema(ctx, store.Schema{Catalog: "main", Name: "demo"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("CreateSchema without catalog = %v, want ErrNotFound", err)
	}
	if err := s.CreateCatalog(ctx, store.Catalog{Name: "main", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateCatalog(ctx, store.Catalog{Name: "main", CreatedAt: t0}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("CreateCatalog dup = %v", err)
	}
	v := store.ModelVersion{Catalog: "main", Schema: "demo", Model: "bot", StorageLocation: "/a/1", Run: "r", CreatedAt: t0}
	if _, err := s.AddModelVersion(ctx, v); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("AddModelVersion without schema = %v", err)
	}
	if err := s.CreateSchema(ctx, store.Schema{Catalog: "main", Name: "demo", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 2; want++ {
		got, err := s.AddModelVersion(ctx, v)
		if err != nil || got != want {
			t.Fatalf("AddModelVersion = %d, %v; want %d", got, err, want)
		}
	}
	if err := s.SetAlias(ctx, "main", "demo", "bot", "champion", 3); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetAlias(no version) = %v", err)
	}
	if err := s.SetAlias(ctx, "main", "demo", "bot", "champion", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAlias(ctx, "main", "demo", "bot", "champion", 2); err != nil {
		t.Fatal(err)
	}
	if v, err := s.ResolveAlias(ctx, "main", "demo", "bot", "champion"); err != nil || v != 2 {
		t.Fatalf("ResolveAlias = %d, %v", v, err)
	}
	vs, err := s.ListModelVersions(ctx, "main", "demo", "bot")
	if err != nil || len(vs) != 2 || len(vs[1].Aliases) != 1 || len(vs[0].Aliases) != 0 || vs[0].Metrics != "{}" {
		t.Fatalf("ListModelVersions = %+v, %v", vs, err)
	}
	if err := s.RemoveAlias(ctx, "main", "demo", "bot", "champion"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveAlias(ctx, "main", "demo", "bot", "champion"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RemoveAlias twice = %v", err)
	}
	if ms, err := s.ListModels(ctx, "main", "demo"); err != nil || len(ms) != 1 {
		t.Fatalf("ListModels = %v, %v", ms, err)
	}
	if _, err := s.ListModelVersions(ctx, "main", "demo", "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ListModelVersions(nope) = %v", err)
	}
}

func testTx(t *testing.T, s *store.Store) {
	ctx := context.Background()
	boom := errors.New("boom")
	err := s.InTx(ctx, func(tx *store.Tx) error {
		if tx.SQLTx() == nil && tx.PgxTx() == nil {
			t.Error("Tx has no driver handle")
		}
		if err := tx.InsertRun(ctx, &store.Run{Name: "tx1", Status: store.StatusQueued, Params: "{}", CreatedAt: t0}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v", err)
	}
	if _, err := s.GetRun(ctx, "tx1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rolled-back run exists: %v", err)
	}
	if err := s.InTx(ctx, func(tx *store.Tx) error {
		return tx.InsertRun(ctx, &store.Run{Name: "tx2", Status: store.StatusQueued, Params: "{}", CreatedAt: t0})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRun(ctx, "tx2"); err != nil {
		t.Fatal(err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
