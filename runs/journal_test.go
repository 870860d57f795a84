package runs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"hone/store"
)

// journalFixture is a QUEUED run whose lease epoch is 3, and a journal of
// that epoch in a fresh work directory.
func journalFixture(t *testing.T) (*fixture, string, string, *journal) {
	t.Helper()
	f := newFixture(t, openSQLite(t))
	f.s.cfg.RetryEvery = time.Millisecond
	r := f.create(t)
	epoch := int64(3)
	if _, err := f.st.UpdateRun(context.Background(), r.Name, store.RunCond{}, store.RunUpdate{LeaseEpoch: &epoch}); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	j, _, err := openJournal(work, epoch)
	if err != nil {
		t.Fatal(err)
	}
	return f, r.Name, work, j
}

func stepRec(i int) record {
	return record{Time: time.Unix(int64(i), 0), Step: &store.StepMetric{Step: i, TotalSteps: 20, Loss: 1, Time: time.Unix(int64(i), 0)}}
}

func eventRec(i int) record {
	return record{Time: time.Unix(int64(i), 0), Event: &store.Event{Type: "LOG", Message: fmt.Sprintf("event %d", i)}}
}

// tracked lists what the store holds of run: steps, event messages,
// checkpoint steps.
func tracked(t *testing.T, st *store.Store, run string) (steps []int, events []string, ckpts []int) {
	t.Helper()
	ctx := context.Background()
	ss, err := st.ListSteps(ctx, run, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		steps = append(steps, s.Step)
	}
	es, err := st.ListEvents(ctx, run, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Type == "LOG" {
			events = append(events, e.Message)
		}
	}
	cs, err := st.ListCheckpoints(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		ckpts = append(ckpts, c.Step)
	}
	return steps, events, ckpts
}

// A store that fails the first deliveries loses nothing: the records wait
// in the journal and arrive in order once it answers; the emptied journal
// file is removed at close.
func TestJournalDeliversThroughFailures(t *testing.T) {
	f, run, _, j := journalFixture(t)
	tr := f.s.newTracker(run, 0, j, &leaseKeeper{s: f.s, epoch: j.epoch, cancel: func(error) {}})
	var mu sync.Mutex
	calls, failures := 0, 7
	deliver := tr.send
	tr.send = func(ctx context.Context, recs []record) error {
		mu.Lock()
		calls++
		fail := calls <= failures
		mu.Unlock()
		if fail {
			return errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
		}
		return deliver(ctx, recs)
	}
	go tr.loop()
	for i := 1; i <= 20; i++ {
		tr.add(stepRec(i))
		tr.add(eventRec(i))
		if i%5 == 0 {
			tr.add(record{Ckpt: &store.Checkpoint{Step: i, Dir: fmt.Sprint(i)}})
		}
		if i%5 == 0 && i > 5 {
			tr.add(record{Forget: ptr(i - 10)}) // keep two
		}
	}
	if !tr.flush(30 * time.Second) {
		t.Fatalf("journal not delivered: %d records pending after %d tries", j.pendingCount(), calls)
	}
	tr.close()
	steps, events, ckpts := tracked(t, f.st, run)
	if len(steps) != 20 || steps[0] != 1 || steps[19] != 20 {
		t.Errorf("steps stored: %v, want 1..20", steps)
	}
	for i, e := range events {
		if e != fmt.Sprintf("event %d", i+1) {
			t.Fatalf("events stored out of order or missing: %v", events)
		}
	}
	if len(events) != 20 {
		t.Errorf("%d events stored, want 20: %v", len(events), events)
	}
	if fmt.Sprint(ckpts) != "[15 20]" {
		t.Errorf("checkpoints listed %v, want [15 20] (5 and 10 pruned)", ckpts)
	}
	if calls <= failures {
		t.Errorf("only %d delivery attempts for %d failures", calls, failures)
	}
	if _, err := os.Stat(j.path); !os.IsNotExist(err) {
		t.Errorf("delivered journal %s still on disk: %v", j.path, err)
	}
}

// A crash between journaling and delivery, or between delivery and the
// journal noting it, loses nothing and stores nothing twice: the reopened
// journal redelivers what it holds, a torn tail is cut off.
func TestJournalCrashRedeliversOnce(t *testing.T) {
	f, run, work, j := journalFixture(t)
	ctx := context.Background()
	for i := 1; i <= 10; i++ {
		if err := j.append(stepRec(i)); err != nil {
			t.Fatal(err)
		}
		if err := j.append(eventRec(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The store takes the first 8 records; the process dies before the
	// journal notes it, in the middle of writing one more record.
	if err := f.s.deliver(ctx, run, j.epoch, j.batch(8), j.key); err != nil {
		t.Fatal(err)
	}
	j.f.Write([]byte{200, 0, 0, 0, 1, 2, 3}) // a torn frame
	j.f.Close()

	j2, _, err := openJournal(work, j.epoch)
	if err != nil {
		t.Fatal(err)
	}
	if n := j2.pendingCount(); n != 20 {
		t.Fatalf("reopened journal holds %d records, want 20", n)
	}
	if err := j2.append(eventRec(11)); err != nil {
		t.Fatal(err)
	}
	if err := f.s.deliver(ctx, run, j2.epoch, j2.batch(100), j2.key); err != nil {
		t.Fatal(err)
	}
	// And once more, as if the truncation after delivery was lost too.
	if err := f.s.deliver(ctx, run, j2.epoch, j2.batch(100), j2.key); err != nil {
		t.Fatal(err)
	}
	steps, events, _ := tracked(t, f.st, run)
	if len(steps) != 10 || len(events) != 11 {
		t.Fatalf("after redelivery: %d steps, %d events (%v); want 10 and 11, each once", len(steps), len(events), events)
	}
	if events[10] != "event 11" {
		t.Errorf("the record appended after the torn tail: %v", events)
	}
}

// Records of an epoch that is no longer the run's are refused, and a
// journal of an older epoch is dropped when a newer claim opens its own.
func TestJournalFenced(t *testing.T) {
	f, run, work, j := journalFixture(t)
	ctx := context.Background()
	if err := f.s.deliver(ctx, run, 2, []record{stepRec(1), eventRec(1)}, j.key); !errors.Is(err, errFenced) {
		t.Fatalf("delivery under epoch 2 of a run at epoch 3 = %v, want errFenced", err)
	}
	if steps, events, _ := tracked(t, f.st, run); len(steps)+len(events) != 0 {
		t.Fatalf("refused delivery stored %v %v", steps, events)
	}
	if err := j.append(eventRec(1)); err != nil {
		t.Fatal(err)
	}
	j.f.Close()
	j4, dropped, err := openJournal(work, 4)
	if err != nil || dropped != 1 || j4.pendingCount() != 0 {
		t.Fatalf("journal of epoch 4 over one of epoch 3: dropped %d, pending %d, %v; want 1 dropped, none pending", dropped, j4.pendingCount(), err)
	}
	if _, err := os.Stat(j.path); !os.IsNotExist(err) {
		t.Errorf("journal of epoch 3 still on disk: %v", err)
	}
}
