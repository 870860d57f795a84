package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"hone/store"
	"hone/store/storetest"
)

// pageAll follows a listing's tokens from the first page to the last.
func pageAll[T any](t *testing.T, what string, limit int, page func(store.Page) ([]T, string, error)) ([]T, int) {
	t.Helper()
	var all []T
	p := store.Page{Limit: limit}
	for pages := 1; ; pages++ {
		got, next, err := page(p)
		if err != nil {
			t.Fatalf("%s page %d: %v", what, pages, err)
		}
		if len(got) > limit {
			t.Fatalf("%s page %d has %d rows, limit %d", what, pages, len(got), limit)
		}
		all = append(all, got...)
		if next == "" {
			return all, pages
		}
		if pages > 100 {
			t.Fatalf("%s: page tokens do not end", what)
		}
		p.Token = next
	}
}

// TestPaging pages every growing listing three rows at a time and checks
// the pages add up to the whole listing, in order, without repeats.
func TestPaging(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store, _ string) {
		ctx := context.Background()
		run := "paged"
		if err := s.InsertRun(ctx, &store.Run{Name: run, Status: store.StatusRunning, Params: "{}", ExperimentPath: "/p/0", CreatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 7; i++ {
			at := t0.Add(time.Duration(i) * time.Second)
			must(t, s.AddEvent(ctx, run, store.Event{Time: at, Type: "LOG", Message: fmt.Sprint(i)}))
			must(t, s.RecordCheckpoint(ctx, run, store.Checkpoint{Step: 10 * i, Dir: fmt.Sprint("/ck/", i), Time: at}))
			must(t, s.RecordStep(ctx, run, store.StepMetric{Step: i, TotalSteps: 7, Loss: 1, Time: at}))
			must(t, s.EnsureExperiment(ctx, store.Experiment{Path: fmt.Sprint("/p/", i), User: "ann", CreatedAt: at}))
		}
		for _, step := range []int{0, 3, 6, 7} { // step 0: before training
			must(t, s.RecordEval(ctx, run, store.EvalMetric{Step: step, Loss: 1, Time: t0}))
		}
		for step := 1; step <= 3; step++ { // (step, index) pairs across page boundaries
			must(t, s.RecordPromptOutputs(ctx, run, []store.PromptOutput{{Step: step, Index: 0, Time: t0}, {Step: step, Index: 1, Time: t0}}))
		}

		wantEv, _ := s.ListEvents(ctx, run, 0)
		gotEv, pages := pageAll(t, "events", 3, func(p store.Page) ([]store.Event, string, error) { return s.PageEvents(ctx, run, 0, p) })
		if !reflect.DeepEqual(gotEv, wantEv) || pages != 3 {
			t.Errorf("paged events = %v in %d pages, want %v in 3", gotEv, pages, wantEv)
		}
		tail, _ := pageAll(t, "events after", 2, func(p store.Page) ([]store.Event, string, error) {
			return s.PageEvents(ctx, run, wantEv[2].ID, p)
		})
		if !reflect.DeepEqual(tail, wantEv[3:]) {
			t.Errorf("paged events after the third = %v, want %v", tail, wantEv[3:])
		}
		wantCk, _ := s.ListCheckpoints(ctx, run)
		gotCk, _ := pageAll(t, "checkpoints", 3, func(p store.Page) ([]store.Checkpoint, string, error) { return s.PageCheckpoints(ctx, run, p) })
		if !reflect.DeepEqual(gotCk, wantCk) || len(gotCk) != 7 {
			t.Errorf("paged checkpoints = %v, want %v", gotCk, wantCk)
		}
		wantPo, _ := s.ListPromptOutputs(ctx, run)
		gotPo, _ := pageAll(t, "prompt outputs", 3, func(p store.Page) ([]store.PromptOutput, string, error) {
			return s.PagePromptOutputs(ctx, run, p)
		})
		if !reflect.DeepEqual(gotPo, wantPo) || len(gotPo) != 6 {
			t.Errorf("paged prompt outputs = %v, want %v", gotPo, wantPo)
		}
		wantEx, _ := s.ListExperiments(ctx)
		gotEx, _ := pageAll(t, "experiments", 3, func(p store.Page) ([]store.Experiment, string, error) { return s.PageExperiments(ctx, p) })
		if !reflect.DeepEqual(gotEx, wantEx) || len(gotEx) < 7 {
			t.Errorf("paged experiments = %v, want %v", gotEx, wantEx)
		}
		// Metrics: steps in pages, each eval exactly once with its page.
		wantSteps, _ := s.ListSteps(ctx, run, -1)
		wantEvals, _ := s.ListEvals(ctx, run)
		var evals []store.EvalMetric
		gotSteps, _ := pageAll(t, "metrics", 3, func(p store.Page) ([]store.StepMetric, string, error) {
			steps, ev, next, err := s.PageMetrics(ctx, run, p)
			for _, e := range ev {
				if len(steps) > 0 && e.Step > steps[len(steps)-1].Step && next != "" {
					t.Errorf("eval of step %d on the page of steps up to %d", e.Step, steps[len(steps)-1].Step)
				}
			}
			evals = append(evals, ev...)
			return steps, next, err
		})
		if !reflect.DeepEqual(gotSteps, wantSteps) || !reflect.DeepEqual(evals, wantEvals) || len(evals) != 4 {
			t.Errorf("paged metrics = %v steps and evals %v, want %v and %v", len(gotSteps), evals, len(wantSteps), wantEvals)
		}

		// Tokens are checked: garbage and another listing's token are refused.
		_, evTok, _ := s.PageEvents(ctx, run, 0, store.Page{Limit: 1})
		if _, _, err := s.PageCheckpoints(ctx, run, store.Page{Token: evTok}); !errors.Is(err, store.ErrBadPageToken) {
			t.Errorf("PageCheckpoints(an events token) = %v, want ErrBadPageToken", err)
		}
		if _, _, err := s.PageExperiments(ctx, store.Page{Token: "garbage!"}); !errors.Is(err, store.ErrBadPageToken) {
			t.Errorf("PageExperiments(garbage) = %v, want ErrBadPageToken", err)
		}
		// Empty listings are empty slices (JSON []), not nil.
		if evs, next, err := s.PageEvents(ctx, "no-such-run", 0, store.Page{}); evs == nil || len(evs) != 0 || next != "" || err != nil {
			t.Errorf("PageEvents(no run) = %#v, %q, %v; want an empty slice", evs, next, err)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
