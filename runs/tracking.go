package runs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"hone/store"
	"hone/train"
)

// errFenced is a delivery the store refused: the run's lease epoch is no
// longer the journal's (another worker claimed the run) or the run is gone.
var errFenced = errors.New("the run was claimed by another job or deleted: records of this worker are refused")

// tracker is one run execution's journal and the goroutine that delivers
// it to the store.
type tracker struct {
	s     *Service
	run   string
	jobID int64
	j     *journal
	lease *leaseKeeper
	// send stores records (s.deliver); tests wrap it to fail.
	send   func(ctx context.Context, recs []record) error
	quit   chan struct{}
	done   chan struct{}
	closed bool
}

// startTracking opens the journal of this claim in workDir, starts its
// delivery and records the checkpoints on disk that the store lacks (and
// forgets those it lists that are gone), so the list names exactly the
// checkpoints on disk whatever happened to an earlier worker.
func (s *Service) startTracking(ctx context.Context, run string, jobID int64, workDir string, lease *leaseKeeper) (*tracker, error) {
	j, dropped, err := openJournal(workDir, lease.epoch)
	if err != nil {
		return nil, err
	}
	if dropped > 0 {
		s.log.Warn("dropped undelivered records of an earlier claim of the run", "run", run, "records", dropped)
	}
	t := s.newTracker(run, jobID, j, lease)
	go t.loop()
	if err := t.reconcile(ctx, workDir); err != nil {
		s.log.Warn("reconcile checkpoints with the disk", "run", run, "err", err)
	}
	return t, nil
}

func (s *Service) newTracker(run string, jobID int64, j *journal, lease *leaseKeeper) *tracker {
	t := &tracker{s: s, run: run, jobID: jobID, j: j, lease: lease, quit: make(chan struct{}), done: make(chan struct{})}
	t.send = func(ctx context.Context, recs []record) error { return s.deliver(ctx, run, j.epoch, recs, j.key) }
	return t
}

// reconcile journals the difference between the checkpoints on disk and
// those the store lists.
func (t *tracker) reconcile(ctx context.Context, workDir string) error {
	disk, err := train.Checkpoints(workDir)
	if err != nil {
		return err
	}
	listed, err := t.s.st.ListCheckpoints(ctx, t.run)
	if err != nil {
		return err
	}
	onDisk := map[int]bool{}
	for _, c := range disk {
		onDisk[c.Step] = true
	}
	known := map[int]bool{}
	for _, c := range listed {
		known[c.Step] = true
		if !onDisk[c.Step] {
			step := c.Step
			t.add(record{Forget: &step})
		}
	}
	for _, c := range disk {
		if !known[c.Step] {
			t.add(record{Ckpt: &store.Checkpoint{Step: c.Step, Epoch: c.Epoch, Dir: c.Dir, Time: t.s.clock()}})
		}
	}
	return nil
}

// add journals r. Should the journal itself fail (a full disk), r goes to
// the store directly, as it did before journals.
func (t *tracker) add(r record) {
	if r.Time.IsZero() {
		r.Time = t.s.clock()
	}
	err := t.j.append(r)
	if err == nil || errors.Is(err, errJournalClosed) {
		return
	}
	t.s.log.Error("journal a record; sending it to the store directly", "run", t.run, "err", err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := t.send(ctx, []record{r}); err != nil {
		t.s.log.Error("record", "run", t.run, "err", err)
	}
}

// event journals an event.
func (t *tracker) event(typ, format string, a ...any) {
	t.add(record{Event: &store.Event{Type: typ, Message: fmt.Sprintf(format, a...)}})
}

// loop delivers the journal in order, retrying with backoff while the
// store does not answer.
func (t *tracker) loop() {
	defer close(t.done)
	s := t.s
	backoff, failing := time.Duration(0), false
	for {
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-t.quit:
			return
		case <-t.j.wake:
		case <-retry:
		}
		for {
			recs := t.j.batch(256)
			if len(recs) == 0 {
				break
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := t.send(ctx, recs)
			cancel()
			if errors.Is(err, errFenced) {
				s.log.Warn("records refused: the run is no longer this job's", "run", t.run, "epoch", t.j.epoch)
				t.j.fence()
				t.lease.lose()
				return
			}
			if err != nil {
				if !failing {
					s.log.Warn("store does not take the run's records; they wait in the journal", "run", t.run, "err", err)
				}
				failing = true
				backoff = min(max(2*backoff, s.cfg.RetryEvery), 16*s.cfg.RetryEvery)
				break
			}
			if failing {
				s.log.Info("store takes the run's records again", "run", t.run)
			}
			failing, backoff = false, 0
			if err := t.j.delivered(len(recs)); err != nil {
				s.log.Warn("truncate journal", "run", t.run, "err", err)
			}
		}
	}
}

// flush waits until everything journaled is delivered (or refused), at
// most wait. It reports whether the journal is empty.
func (t *tracker) flush(wait time.Duration) bool {
	select {
	case <-t.j.idleCh():
		return true
	case <-time.After(wait):
		t.s.log.Error("store did not take the run's records in time; they stay in the journal", "run", t.run,
			"records", t.j.pendingCount(), "journal", t.j.path)
		return false
	}
}

// close stops delivery and closes the journal.
func (t *tracker) close() {
	if t.closed {
		return
	}
	t.closed = true
	close(t.quit)
	<-t.done
	if err := t.j.close(); err != nil {
		t.s.log.Warn("close journal", "run", t.run, "err", err)
	}
}

// deliver stores recs in one transaction if the run's lease epoch is still
// epoch, else refuses them with errFenced.
func (s *Service) deliver(ctx context.Context, run string, epoch int64, recs []record, key func(record) string) error {
	return s.st.InTx(ctx, func(tx *store.Tx) error {
		r, err := tx.LockRun(ctx, run)
		if errors.Is(err, store.ErrNotFound) {
			return errFenced
		}
		if err != nil {
			return err
		}
		if r.LeaseEpoch != epoch {
			return errFenced
		}
		for _, rec := range recs {
			if err := apply(ctx, tx, run, rec, key(rec)); err != nil {
				return err
			}
		}
		return nil
	})
}

// apply stores one record; each kind is idempotent.
func apply(ctx context.Context, tx *store.Tx, run string, r record, key string) error {
	switch {
	case r.Step != nil:
		if err := tx.RecordStep(ctx, run, *r.Step); err != nil {
			return err
		}
		if !r.ETA.IsZero() {
			if _, err := tx.UpdateRun(ctx, run, store.RunCond{}, store.RunUpdate{EstimatedEndAt: &r.ETA}); err != nil {
				return err
			}
		}
	case r.Running != nil:
		running := store.StatusRunning
		ok, err := tx.UpdateRun(ctx, run, store.RunCond{JobID: r.Running.JobID,
			Statuses: []store.RunStatus{store.StatusStarting}}, store.RunUpdate{Status: &running})
		if err != nil || !ok {
			return err
		}
		return tx.AddEvent(ctx, run, store.Event{Time: r.Time, Type: string(store.StatusRunning), Message: r.Running.Message, Key: key})
	case r.Eval != nil:
		return tx.RecordEval(ctx, run, *r.Eval)
	case r.Ckpt != nil:
		return tx.RecordCheckpoint(ctx, run, *r.Ckpt)
	case r.Forget != nil:
		return tx.DeleteCheckpoint(ctx, run, *r.Forget)
	case r.Event != nil:
		e := *r.Event
		e.Time, e.Key = r.Time, key
		return tx.AddEvent(ctx, run, e)
	case r.Prompts != nil:
		return tx.RecordPromptOutputs(ctx, run, r.Prompts)
	}
	return nil
}
