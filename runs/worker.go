package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/riverqueue/river"

	"hone/catalog"
	"hone/store"
)

// trainWorker is the river worker for TrainArgs.
type trainWorker struct {
	river.WorkerDefaults[TrainArgs]
	s *Service
}

// Timeout: training is bounded by its duration, not by river.
func (w *trainWorker) Timeout(*river.Job[TrainArgs]) time.Duration { return -1 }

// Work never lets a panic or a training error escape as a crash: the run
// fails with the reason in its events.
func (w *trainWorker) Work(ctx context.Context, job *river.Job[TrainArgs]) (err error) {
	s := w.s
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic while training", "run", job.Args.Run, "panic", p, "stack", string(debug.Stack()))
			s.finish(context.WithoutCancel(ctx), job.Args.Run, job.ID, store.StatusFailed, fmt.Sprintf("internal error: %v", p), "")
			err = nil
		}
	}()
	return s.execute(ctx, job.ID, job.Attempt, job.Args.Run)
}

var errStopRequested = errors.New("run cancelled by request")

func (s *Service) execute(ctx context.Context, jobID int64, attempt int, name string) error {
	now := s.clock()
	run, err := s.st.GetRun(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted meanwhile
	}
	if err != nil {
		return err
	}
	if run.JobID != jobID || run.Status.Terminal() {
		s.log.Info("stale job ignored", "run", name, "job", jobID, "run_job", run.JobID, "status", run.Status)
		return nil
	}
	if run.Status == store.StatusStopping {
		s.finish(ctx, name, jobID, store.StatusStopped, "", "cancelled before training resumed")
		return nil
	}
	resuming := !run.StartedAt.IsZero()
	starting, owner, until := store.StatusStarting, s.cfg.WorkerID, now.Add(s.cfg.LeaseTTL)
	up := store.RunUpdate{Status: &starting, LeaseOwner: &owner, LeaseUntil: &until}
	if !resuming {
		up.StartedAt = &now
	}
	ok, err := s.st.UpdateRun(ctx, name, store.RunCond{
		Statuses: []store.RunStatus{store.StatusPending, store.StatusQueued, store.StatusStarting, store.StatusRunning},
		JobID:    jobID, LeaseFreeAt: now, Owner: owner}, up)
	if err != nil {
		return err
	}
	if !ok {
		// Another live worker holds the lease, or the run moved on: look
		// again after the lease would have expired.
		return river.JobSnooze(s.cfg.LeaseTTL)
	}
	p, err := decodeParams(run)
	if err != nil {
		s.finish(ctx, name, jobID, store.StatusFailed, err.Error(), "")
		return nil
	}
	workDir := filepath.Join(s.runDir(name), "work")
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		s.finish(ctx, name, jobID, store.StatusFailed, fmt.Sprintf("create work directory: %v", err), "")
		return nil
	}
	if resuming {
		s.event(ctx, name, string(store.StatusStarting), "worker %s resumes the run (attempt %d) from the last checkpoint in %s", owner, attempt, workDir)
	} else {
		s.event(ctx, name, string(store.StatusStarting), "worker %s picked up the run; preparing data in %s", owner, workDir)
	}

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	obs := &observer{s: s, run: name, jobID: jobID}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.watch(runCtx, name, jobID, cancel)
	}()
	res, trainErr := s.tr.Run(runCtx, p.Spec, workDir, obs)
	cancel(nil)
	wg.Wait()
	bg := context.WithoutCancel(ctx)

	switch {
	case trainErr == nil:
		mv, err := s.register(bg, name, p, res)
		if err != nil {
			s.finish(bg, name, jobID, store.StatusFailed, fmt.Sprintf("register the final model: %v", err), "")
			return nil
		}
		s.finish(bg, name, jobID, store.StatusCompleted, "", fmt.Sprintf("trained %d steps (%d tokens, train loss %.4g); registered as %s", res.Steps, res.TokensSeen, res.TrainLoss, mv))
	case errors.Is(context.Cause(runCtx), errStopRequested):
		s.finish(bg, name, jobID, store.StatusStopped, "", "cancelled at step "+obs.lastStepString()+"; the last checkpoint is kept")
	case ctx.Err() != nil:
		// This worker is shutting down: free the lease so the run resumes
		// from its checkpoint on the next worker to take the job.
		s.release(bg, name, jobID)
		s.event(bg, name, string(store.StatusQueued), "worker %s shut down at step %s; the run will resume from its last checkpoint", owner, obs.lastStepString())
		return river.JobSnooze(0)
	case errors.Is(context.Cause(runCtx), errLeaseLost):
		s.log.Warn("lease lost; leaving the run to its new job", "run", name, "job", jobID)
		return nil
	default:
		s.finish(bg, name, jobID, store.StatusFailed, trainErr.Error(), "")
	}
	return nil
}

var errLeaseLost = errors.New("lease lost to another worker")

// watch renews the lease and cancels the training context when the run is
// asked to stop (or the lease was taken over).
func (s *Service) watch(ctx context.Context, name string, jobID int64, cancel context.CancelCauseFunc) {
	t := time.NewTicker(s.cfg.PollEvery)
	defer t.Stop()
	lastRenew := s.clock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		run, err := s.st.GetRun(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			cancel(errStopRequested)
			return
		}
		if err != nil {
			s.log.Warn("poll run", "run", name, "err", err)
			continue
		}
		if run.Status == store.StatusStopping {
			cancel(errStopRequested)
			return
		}
		if run.JobID != jobID || run.LeaseOwner != s.cfg.WorkerID {
			cancel(errLeaseLost)
			return
		}
		if now := s.clock(); now.Sub(lastRenew) >= s.cfg.LeaseTTL/3 {
			until := now.Add(s.cfg.LeaseTTL)
			ok, err := s.st.UpdateRun(ctx, name, store.RunCond{JobID: jobID, LeaseFreeAt: now, Owner: s.cfg.WorkerID},
				store.RunUpdate{LeaseUntil: &until})
			if err == nil && !ok {
				cancel(errLeaseLost)
				return
			}
			if err == nil {
				lastRenew = now
			}
		}
	}
}

// finish moves the run to a terminal state (if this job still owns it),
// frees the lease and records the event.
func (s *Service) finish(ctx context.Context, name string, jobID int64, status store.RunStatus, reason, message string) {
	now, empty, zero := s.clock(), "", time.Time{}
	up := store.RunUpdate{Status: &status, CompletedAt: &now, LeaseOwner: &empty, LeaseUntil: &zero}
	if reason != "" {
		up.Error = &reason
	}
	if message == "" {
		message = reason
	}
	ok, err := s.transition(ctx, name, store.RunCond{JobID: jobID,
		Statuses: []store.RunStatus{store.StatusPending, store.StatusQueued, store.StatusStarting, store.StatusRunning, store.StatusStopping}},
		up, string(status), message)
	if err != nil || !ok {
		s.log.Warn("finish run", "run", name, "status", status, "updated", ok, "err", err)
		return
	}
	s.log.Info("run finished", "run", name, "status", status, "message", message)
}

func (s *Service) release(ctx context.Context, name string, jobID int64) {
	empty, zero := "", time.Time{}
	if _, err := s.st.UpdateRun(ctx, name, store.RunCond{JobID: jobID, Owner: s.cfg.WorkerID, LeaseFreeAt: s.clock()},
		store.RunUpdate{LeaseOwner: &empty, LeaseUntil: &zero}); err != nil {
		s.log.Warn("release lease", "run", name, "err", err)
	}
}

// register puts the final model in the catalog and records the version.
func (s *Service) register(ctx context.Context, name string, p *params, res *Result) (string, error) {
	target, err := catalog.ParseName(p.Target)
	if err != nil {
		return "", err
	}
	metrics := map[string]any{"steps": res.Steps, "tokens_seen": res.TokensSeen}
	if !math.IsNaN(res.TrainLoss) && !math.IsInf(res.TrainLoss, 0) {
		metrics["train_loss"] = res.TrainLoss
	}
	if res.EvalLoss != 0 && !math.IsNaN(res.EvalLoss) && !math.IsInf(res.EvalLoss, 0) {
		metrics["eval_loss"] = res.EvalLoss
	}
	mj, _ := json.Marshal(metrics)
	v, err := s.cat.Register(ctx, catalog.Registration{Target: target, SourceDir: res.ModelDir, Move: true, Run: name,
		BaseModel: p.Model.BaseModel, DataFingerprint: res.DataFingerprint, Metrics: string(mj), License: p.Model.License})
	if err != nil {
		return "", err
	}
	ref := fmt.Sprintf("%s/%d", p.Target, v.Version)
	if _, err := s.st.UpdateRun(ctx, name, store.RunCond{}, store.RunUpdate{ModelVersion: &ref}); err != nil {
		return "", err
	}
	return ref, nil
}

// observer records training progress for one run. Store errors are logged,
// never allowed to stop training.
type observer struct {
	s       *Service
	run     string
	jobID   int64
	mu      sync.Mutex
	running bool
	last    int
}

func (o *observer) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func (o *observer) lastStepString() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return fmt.Sprint(o.last)
}

func (o *observer) OnStep(m Step) {
	ctx, cancel := o.ctx()
	defer cancel()
	s := o.s
	now := s.clock()
	o.mu.Lock()
	first := !o.running
	o.running, o.last = true, m.Step
	o.mu.Unlock()
	if err := s.st.RecordStep(ctx, o.run, storeStep(m, now)); err != nil {
		s.log.Error("record step", "run", o.run, "step", m.Step, "err", err)
	}
	up := store.RunUpdate{}
	if m.ETA > 0 {
		end := now.Add(m.ETA)
		up.EstimatedEndAt = &end
	}
	cond := store.RunCond{JobID: o.jobID}
	if first {
		running := store.StatusRunning
		up.Status = &running
		cond.Statuses = []store.RunStatus{store.StatusStarting, store.StatusRunning}
	}
	if up.Status != nil || up.EstimatedEndAt != nil {
		ok, err := s.st.UpdateRun(ctx, o.run, cond, up)
		if err != nil {
			s.log.Error("update run", "run", o.run, "err", err)
		}
		if first && ok {
			s.event(ctx, o.run, string(store.StatusRunning), "training: step %d of %d", m.Step, m.TotalSteps)
		}
	}
}

func storeStep(m Step, now time.Time) store.StepMetric {
	return store.StepMetric{Step: m.Step, TotalSteps: m.TotalSteps, Epoch: m.Epoch, Loss: m.Loss, LR: m.LR,
		GradNorm: m.GradNorm, TokensPerSec: m.TokensPerSec, TokensSeen: m.TokensSeen, Elapsed: m.Elapsed, Time: now}
}

func (o *observer) OnEval(m Eval) {
	ctx, cancel := o.ctx()
	defer cancel()
	if err := o.s.st.RecordEval(ctx, o.run, store.EvalMetric{Step: m.Step, Loss: m.Loss, Perplexity: m.Perplexity,
		TokenAccuracy: m.TokenAccuracy, Time: o.s.clock()}); err != nil {
		o.s.log.Error("record eval", "run", o.run, "err", err)
	}
	o.s.event(ctx, o.run, "EVAL", "step %d: eval loss %.4g, perplexity %.4g, token accuracy %.3f", m.Step, m.Loss, m.Perplexity, m.TokenAccuracy)
}

func (o *observer) OnCheckpoint(c Checkpoint) {
	ctx, cancel := o.ctx()
	defer cancel()
	if err := o.s.st.RecordCheckpoint(ctx, o.run, store.Checkpoint{Step: c.Step, Epoch: c.Epoch, Dir: c.Dir, Time: o.s.clock()}); err != nil {
		o.s.log.Error("record checkpoint", "run", o.run, "err", err)
	}
	// The trainer keeps only the newest few on disk: list only those. This
	// runs where the files are, so a missing directory means pruned.
	if all, err := o.s.st.ListCheckpoints(ctx, o.run); err == nil {
		for _, old := range all {
			if _, err := os.Stat(old.Dir); errors.Is(err, os.ErrNotExist) {
				if err := o.s.st.DeleteCheckpoint(ctx, o.run, old.Step); err != nil {
					o.s.log.Warn("forget pruned checkpoint", "run", o.run, "step", old.Step, "err", err)
				}
			}
		}
	}
	o.s.event(ctx, o.run, "CHECKPOINT", "step %d (epoch %.3g) saved to %s", c.Step, c.Epoch, c.Dir)
}

func (o *observer) OnPromptOutputs(step int, outs []PromptOutput) {
	ctx, cancel := o.ctx()
	defer cancel()
	now := o.s.clock()
	rows := make([]store.PromptOutput, len(outs))
	for i, p := range outs {
		rows[i] = store.PromptOutput{Step: step, Index: i, Prompt: p.Prompt, Output: p.Output, Time: now}
	}
	if err := o.s.st.RecordPromptOutputs(ctx, o.run, rows); err != nil {
		o.s.log.Error("record prompt outputs", "run", o.run, "err", err)
	}
}

func (o *observer) OnLog(msg string) {
	ctx, cancel := o.ctx()
	defer cancel()
	o.s.event(ctx, o.run, "LOG", "%s", strings.TrimSpace(msg))
}

// reapLoop re-queues runs whose worker stopped renewing its lease (it was
// killed), at start-up and then every lease period.
func (s *Service) reapLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.LeaseTTL / 2)
	defer t.Stop()
	for {
		if err := s.reap(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reap", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) reap(ctx context.Context) error {
	active := []store.RunStatus{store.StatusStarting, store.StatusRunning, store.StatusStopping}
	var orphans []store.Run
	tok := ""
	for {
		page, next, err := s.st.ListRuns(ctx, store.RunFilter{Statuses: active, Limit: 500, PageToken: tok})
		if err != nil {
			return err
		}
		now := s.clock()
		for _, r := range page {
			if r.LeaseOwner != "" && (r.LeaseUntil.Before(now) || s.deadLocalWorker(r.LeaseOwner)) {
				orphans = append(orphans, r)
			}
		}
		if next == "" {
			break
		}
		tok = next
	}
	for _, r := range orphans {
		if r.Status == store.StatusStopping {
			s.finish(ctx, r.Name, r.JobID, store.StatusStopped, "", fmt.Sprintf("worker %s stopped responding while stopping; the last checkpoint is kept", r.LeaseOwner))
			continue
		}
		err := s.st.InTx(ctx, func(tx *store.Tx) error {
			id, err := s.q.insertTx(ctx, tx, TrainArgs{Run: r.Name})
			if err != nil {
				return err
			}
			queued, empty, zero := store.StatusQueued, "", time.Time{}
			ok, err := tx.UpdateRun(ctx, r.Name, store.RunCond{JobID: r.JobID, LeaseFreeAt: s.clock(), Owner: r.LeaseOwner,
				Statuses: []store.RunStatus{store.StatusStarting, store.StatusRunning}},
				store.RunUpdate{Status: &queued, JobID: &id, LeaseOwner: &empty, LeaseUntil: &zero})
			if err != nil {
				return err
			}
			if !ok {
				return errNotOrphan
			}
			return tx.AddEvent(ctx, r.Name, store.Event{Time: s.clock(), Type: string(store.StatusQueued),
				Message: fmt.Sprintf("worker %s stopped responding (lease expired %s); re-queued to resume from the last checkpoint",
					r.LeaseOwner, r.LeaseUntil.Format(time.RFC3339))})
		})
		if err != nil && !errors.Is(err, errNotOrphan) {
			return fmt.Errorf("re-queue %s: %w", r.Name, err)
		}
		if err == nil {
			s.log.Warn("re-queued run of a dead worker", "run", r.Name, "worker", r.LeaseOwner)
		}
	}
	return nil
}

var errNotOrphan = errors.New("run is no longer orphaned")

// deadLocalWorker reports whether owner (a worker id "host-pid-random") is
// a process of this host that no longer exists, such as the previous
// `hone serve` killed before a restart: its runs need not wait for the
// lease to expire.
func (s *Service) deadLocalWorker(owner string) bool {
	host, err := os.Hostname()
	if err != nil || owner == s.cfg.WorkerID || !strings.HasPrefix(owner, host+"-") {
		return false
	}
	parts := strings.Split(strings.TrimPrefix(owner, host+"-"), "-")
	if len(parts) != 2 {
		return false
	}
	pid, err := strconv.Atoi(parts[0])
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}
