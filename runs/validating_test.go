package runs

// Background validation of data over Config.InlineValidateMax: the create
// answers PENDING before validation ends (a gate in the trainer's Validate
// holds it, no timing), then the run is queued, failed with the report's
// file:line, stopped by a cancel, or validated again after a restart.

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/client"
	"hone/store"
	"hone/train"
)

// gateTrainer's Validate signals entered, then returns result's value, or
// ctx's error (also sent on cancelled) if ctx ends first.
type gateTrainer struct {
	*scriptTrainer
	entered   chan string
	result    chan error
	cancelled chan error
}

func newGate(tr *scriptTrainer) *gateTrainer {
	return &gateTrainer{scriptTrainer: tr, entered: make(chan string, 4), result: make(chan error, 4), cancelled: make(chan error, 4)}
}

func (g *gateTrainer) Validate(ctx context.Context, spec train.Spec) (string, error) {
	g.entered <- spec.TrainData
	select {
	case err := <-g.result:
		return `{"stats":{"examples":4,"tokens":40}}`, err
	case <-ctx.Done():
		g.cancelled <- ctx.Err()
		return "", ctx.Err()
	}
}

// largeFixture is a fixture whose inline-validation limit is 64 bytes,
// with big.jsonl over it and a gated Validate.
func largeFixture(t *testing.T) (*fixture, *gateTrainer, client.CreateRunRequest) {
	f := newFixture(t, openSQLite(t))
	f.s.cfg.InlineValidateMax = 64
	g := newGate(f.tr)
	f.s.tr = g
	write(t, filepath.Join(f.data, "big.jsonl"), strings.Repeat(`{"messages":[{"role":"user","content":"hi"}]}`+"\n", 4))
	return f, g, client.CreateRunRequest{Model: f.model, TrainDataPath: "big.jsonl", RegisterTo: "main.demo.bot", TrainingDuration: "3ba"}
}

// waitRun waits for the run's status to be want (a bound for a hang, not
// a speed check).
func waitRun(t *testing.T, st *store.Store, name string, want store.RunStatus) *store.Run {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := st.GetRun(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == want {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s is %s, want %s", name, r.Status, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func eventTypes(t *testing.T, st *store.Store, name string) []store.Event {
	t.Helper()
	evs, err := st.ListEvents(context.Background(), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func hasEvent(evs []store.Event, typ, substr string) bool {
	for _, e := range evs {
		if e.Type == typ && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

func TestCreateLargeDataValidatesInBackground(t *testing.T) {
	f, g, req := largeFixture(t)
	ctx := context.Background()
	run, err := f.s.Create(ctx, req) // returns while Validate is held at the gate
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != client.StatusPending {
		t.Fatalf("create over the inline limit answered %s, want PENDING", run.Status)
	}
	if got := <-g.entered; filepath.Base(got) != "big.jsonl" {
		t.Fatalf("validated %s, want big.jsonl", got)
	}
	if r := f.get(t, run.Name); r.Status != store.StatusPending || r.JobID != 0 {
		t.Fatalf("while validating: %s with job %d, want PENDING without a job", r.Status, r.JobID)
	}
	g.result <- nil
	r := waitRun(t, f.st, run.Name, store.StatusQueued)
	evs := eventTypes(t, f.st, run.Name)
	if !hasEvent(evs, "VALIDATING", "MiB of data") || !hasEvent(evs, "QUEUED", "4 examples, 40 tokens") {
		t.Fatalf("events %+v: want a VALIDATING progress event and a QUEUED one", evs)
	}
	if err := f.s.execute(ctx, r.JobID, 1, r.Name); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, r.Name); got.Status != store.StatusCompleted {
		t.Fatalf("after training: %s, want COMPLETED", got.Status)
	}

	// Small data keeps the inline check: refused with 400 and no run.
	write(t, filepath.Join(f.data, "small.jsonl"), "{}\n")
	g.result <- errors.New("small.jsonl:1: no messages")
	small := req
	small.TrainDataPath = "small.jsonl"
	if _, err := f.s.Create(ctx, small); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "small.jsonl:1") {
		t.Fatalf("create with small bad data = %v, want ErrInvalid naming small.jsonl:1", err)
	}
}

func TestBackgroundValidationFailureNamesLine(t *testing.T) {
	f, g, req := largeFixture(t)
	run, err := f.s.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	<-g.entered
	g.result <- errors.New(`big.jsonl:3: messages[0].role "robot": want system, user or assistant`)
	r := waitRun(t, f.st, run.Name, store.StatusFailed)
	if !strings.Contains(r.Error, "big.jsonl:3") || r.CompletedAt.IsZero() || r.JobID != 0 {
		t.Fatalf("failed run: error %q, completed %v, job %d; want big.jsonl:3, a completion time, no job", r.Error, r.CompletedAt, r.JobID)
	}
	if e := f.lastEvent(t, run.Name); e.Type != "FAILED" || !strings.Contains(e.Message, "big.jsonl:3") {
		t.Fatalf("last event %+v, want FAILED naming big.jsonl:3", e)
	}
}

func TestCancelWhileValidating(t *testing.T) {
	f, g, req := largeFixture(t)
	ctx := context.Background()
	run, err := f.s.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	<-g.entered
	if _, err := f.s.Cancel(ctx, client.CancelRequest{Names: []string{run.Name}}); err != nil {
		t.Fatal(err)
	}
	if err := <-g.cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("validation ended with %v, want context.Canceled", err)
	}
	f.s.val.wg.Wait()
	if r := f.get(t, run.Name); r.Status != store.StatusStopped || r.JobID != 0 {
		t.Fatalf("after cancel: %s with job %d, want STOPPED without a job", r.Status, r.JobID)
	}
}

func TestRestartRevalidatesPending(t *testing.T) {
	f, g, req := largeFixture(t)
	ctx := context.Background()
	run, err := f.s.Create(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	<-g.entered
	if err := f.s.Stop(ctx); err != nil { // the process ends mid-validation
		t.Fatal(err)
	}
	<-g.cancelled
	if r := f.get(t, run.Name); r.Status != store.StatusPending {
		t.Fatalf("after stop: %s, want PENDING", r.Status)
	}
	cfg := f.s.cfg
	g2 := newGate(f.tr)
	cfg.Trainer = g2
	s2, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s2.Stop(ctx)
	if got := <-g2.entered; filepath.Base(got) != "big.jsonl" {
		t.Fatalf("re-validated %s, want big.jsonl", got)
	}
	g2.result <- nil
	r := waitRun(t, f.st, run.Name, store.StatusQueued)
	if r.JobID == 0 || !hasEvent(eventTypes(t, f.st, run.Name), "VALIDATING", "validating again") {
		t.Fatalf("re-validated run: job %d, events %+v; want a job and a 'validating again' event", r.JobID, eventTypes(t, f.st, run.Name))
	}
}
