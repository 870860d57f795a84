package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"hone/dataset"
	"hone/store"
	"hone/train"
)

// Background validation: a create request never spends data-sized time in
// the API. When the training and eval data together exceed
// Config.InlineValidateMax, Create inserts the run PENDING (no queue job)
// and answers at once; a goroutine owned by the service validates the data
// with bounded concurrency, recording VALIDATING events, then queues the
// run exactly as an inline-validated create does, or fails it with the
// report's first problems (file:line). Cancelling a PENDING run stops its
// validation. A PENDING run found when the service starts (its validator
// died with its process) is validated again; the PENDING → QUEUED/FAILED
// transitions are conditional, so two validators of one run are harmless.

// defaultInlineValidateMax is Config.InlineValidateMax's default.
const defaultInlineValidateMax = 16 << 20

// validators are the service's background validations.
type validators struct {
	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	sem     chan struct{}
	running map[string]context.CancelFunc // by run name
	resumed bool                          // PENDING runs re-validated once per service
}

func (s *Service) initValidators() {
	v := &s.val
	v.ctx, v.cancel = context.WithCancel(context.Background())
	v.sem = make(chan struct{}, s.cfg.ValidateConcurrency)
	v.running = map[string]context.CancelFunc{}
}

// dataSize is the bytes of the spec's training and eval data (files, or
// the regular files under folders), counted until it passes limit. A path
// it cannot read counts 0: inline validation reports it precisely.
func dataSize(spec train.Spec, limit int64) int64 {
	var n int64
	for _, p := range []string{spec.TrainData, spec.EvalData} {
		if p == "" {
			continue
		}
		_ = filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
				n += fi.Size()
			}
			if n > limit {
				return fs.SkipAll
			}
			return nil
		})
	}
	return n
}

// validateLater validates run name's data in the background.
func (s *Service) validateLater(name string, p *params, size int64) {
	v := &s.val
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.running[name]; ok {
		return
	}
	ctx, cancel := context.WithCancel(v.ctx)
	v.running[name] = cancel
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		defer func() {
			v.mu.Lock()
			delete(v.running, name)
			v.mu.Unlock()
			cancel()
		}()
		s.validateRun(ctx, name, p, size)
	}()
}

// stopValidation cancels run name's validation in this process, if any.
func (s *Service) stopValidation(name string) {
	s.val.mu.Lock()
	defer s.val.mu.Unlock()
	if c, ok := s.val.running[name]; ok {
		c()
	}
}

// stopValidators cancels every background validation and waits for them;
// their runs stay PENDING for the next start. Later ones run again.
func (s *Service) stopValidators() {
	v := &s.val
	v.mu.Lock()
	v.cancel()
	v.mu.Unlock()
	v.wg.Wait()
	v.mu.Lock()
	v.ctx, v.cancel = context.WithCancel(context.Background())
	v.resumed = false
	v.mu.Unlock()
}

func (s *Service) validateRun(ctx context.Context, name string, p *params, size int64) {
	select { // bounded: data validation is CPU and I/O heavy
	case s.val.sem <- struct{}{}:
		defer func() { <-s.val.sem }()
	case <-ctx.Done():
		return
	}
	if r, err := s.st.GetRun(ctx, name); err != nil || r.Status != store.StatusPending {
		return // cancelled or deleted while waiting for a slot
	}
	start := time.Now()
	s.event(ctx, name, "VALIDATING", "validating %s of data", mib(size))
	type result struct {
		summary string
		err     error
	}
	done := make(chan result, 1)
	var progress atomic.Pointer[dataset.Progress] // the latest, from the validating goroutine
	go func() {
		defer func() {
			if x := recover(); x != nil {
				s.log.Error("panic while validating", "run", name, "panic", x, "stack", string(debug.Stack()))
				done <- result{"", fmt.Errorf("internal error: %v", x)}
			}
		}()
		var sum string
		var err error
		if pv, ok := s.tr.(progressValidator); ok {
			sum, err = pv.ValidateProgress(ctx, p.planned(), func(pr dataset.Progress) { progress.Store(&pr) })
		} else {
			sum, err = s.tr.Validate(ctx, p.planned())
		}
		done <- result{sum, err}
	}()
	poll := time.NewTicker(s.cfg.PollEvery)
	defer poll.Stop()
	lastNote := time.Now()
	var res result
wait:
	for {
		select {
		case res = <-done:
			break wait
		case <-ctx.Done():
			return // cancelled, or the service stops: the run stays as it is
		case <-poll.C:
			// A cancel through another process reaches us here.
			if r, err := s.st.GetRun(ctx, name); err == nil && r.Status != store.StatusPending {
				return
			}
			if time.Since(lastNote) >= s.cfg.ValidateProgressEvery {
				lastNote = time.Now()
				elapsed := time.Since(start).Round(time.Second)
				if pr := progress.Load(); pr != nil {
					s.event(ctx, name, "VALIDATING", "%s", progressNote(*pr, elapsed))
				} else {
					s.event(ctx, name, "VALIDATING", "still validating %s of data (%s so far)", mib(size), elapsed)
				}
			}
		}
	}
	if ctx.Err() != nil {
		return
	}
	// The run keeps the data report, as an inline-validated run does.
	var withReport *string
	if res.summary != "" {
		p.Validation = res.summary
		if raw, err := json.Marshal(p); err == nil {
			withReport = new(string(raw))
		}
	}
	if res.err != nil {
		msg := "input validation failed: " + strings.TrimSpace(res.err.Error())
		failed, now := store.StatusFailed, s.clock()
		_, err := s.transition(context.WithoutCancel(ctx), name, store.RunCond{Statuses: []store.RunStatus{store.StatusPending}},
			store.RunUpdate{Status: &failed, CompletedAt: &now, Error: &msg, Params: withReport}, string(store.StatusFailed), msg)
		if err != nil {
			s.log.Error("record failed validation", "run", name, "err", err)
		}
		return
	}
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		id, err := s.q.insertTx(ctx, tx, TrainArgs{Run: name})
		if err != nil {
			return err
		}
		queued := store.StatusQueued
		ok, err := tx.UpdateRun(ctx, name, store.RunCond{Statuses: []store.RunStatus{store.StatusPending}},
			store.RunUpdate{Status: &queued, JobID: &id, Params: withReport})
		if err != nil {
			return err
		}
		if !ok {
			return errNotPending // cancelled meanwhile: no job
		}
		return tx.AddEvent(ctx, name, store.Event{Time: s.clock(), Type: string(store.StatusQueued),
			Message: fmt.Sprintf("inputs validated (%s%s in %s); waiting for a worker", mib(size), counts(res.summary), time.Since(start).Round(time.Millisecond))})
	})
	if err != nil && !errors.Is(err, errNotPending) {
		// The run stays PENDING; the next start validates it again.
		s.log.Error("queue validated run", "run", name, "err", err)
	}
}

var errNotPending = errors.New("run is no longer PENDING")

// resumeValidations validates again the PENDING runs whose validator was
// lost (the process ended), once per start.
func (s *Service) resumeValidations(ctx context.Context) error {
	s.val.mu.Lock()
	if s.val.resumed {
		s.val.mu.Unlock()
		return nil
	}
	s.val.resumed = true
	s.val.mu.Unlock()
	tok := ""
	for {
		page, next, err := s.st.ListRuns(ctx, store.RunFilter{Statuses: []store.RunStatus{store.StatusPending}, Limit: 1000, PageToken: tok})
		if err != nil {
			return fmt.Errorf("runs: list PENDING runs to validate again: %w", err)
		}
		for i := range page {
			r := &page[i]
			p, err := decodeParams(r)
			if err != nil {
				msg := fmt.Sprintf("its validation was interrupted and its settings cannot be read (%v); create it again", err)
				failed, now := store.StatusFailed, s.clock()
				if _, err := s.transition(ctx, r.Name, store.RunCond{Statuses: []store.RunStatus{store.StatusPending}},
					store.RunUpdate{Status: &failed, CompletedAt: &now, Error: &msg}, string(store.StatusFailed), msg); err != nil {
					return err
				}
				continue
			}
			s.event(ctx, r.Name, "VALIDATING", "validation interrupted (the server restarted); validating again")
			s.validateLater(r.Name, p, dataSize(p.Spec, 1<<62))
		}
		if next == "" {
			return nil
		}
		tok = next
	}
}

// counts is ", N examples, T tokens" from a data report's JSON summary,
// or "" (a trainer's plain-text summary).
func counts(summary string) string {
	var rep struct {
		Stats struct {
			Examples int64 `json:"examples"`
			Tokens   int64 `json:"tokens"`
		} `json:"stats"`
	}
	if json.Unmarshal([]byte(summary), &rep) != nil || rep.Stats.Examples == 0 {
		return ""
	}
	return fmt.Sprintf(", %d examples, %d tokens", rep.Stats.Examples, rep.Stats.Tokens)
}

// progressNote is a background validation's progress event, e.g.
// "validating: 12.0 of 40.0 MiB read, 51234 records checked (30%, 1m0s so far)";
// the percent only when the total is known.
func progressNote(p dataset.Progress, elapsed time.Duration) string {
	if p.TotalBytes <= 0 {
		return fmt.Sprintf("validating: %s read, %d records checked (%s so far)", mib(p.BytesRead), p.Records, elapsed)
	}
	return fmt.Sprintf("validating: %.1f of %s read, %d records checked (%d%%, %s so far)",
		float64(p.BytesRead)/(1<<20), mib(p.TotalBytes), p.Records, 100*p.BytesRead/p.TotalBytes, elapsed)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
