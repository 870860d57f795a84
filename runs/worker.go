package runs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/riverqueue/river"

	"hone/catalog"
	"hone/store"
	"hone/train"
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
	// A slot held by a rank of another worker's run: try again later.
	later := river.JobSnooze(max(s.cfg.FetchPoll, time.Second))
	if !s.takeSlot() {
		return later
	}
	// A multi-node run defers to older ones whose rendezvous need workers:
	// this worker joins one instead of opening a rendezvous of its own, and
	// again when its run went back to the queue (it yielded, or its
	// rendezvous did not complete). The rank keeps the slot then.
	handed := false
	defer func() {
		if !handed {
			s.freeSlot()
		}
	}()
	if handed = s.joinOlderGang(ctx, job.Args.Run); handed {
		return later
	}
	err = s.execute(ctx, job.ID, job.Attempt, job.Args.Run)
	handed = err != nil && s.joinOlderGang(ctx, job.Args.Run)
	return err
}

var (
	errStopRequested = errors.New("run cancelled by request")
	errLeaseLost     = errors.New("lease lost to another worker")
)

// execute works one job of a run: claim the lease, check the inputs again,
// train, register, record the outcome. The lease is renewed from the claim
// until the outcome is recorded; its epoch fences every write of the run.
// Records go through the run's journal, so a store that does not answer
// for a while loses nothing; the journal is delivered before the outcome.
func (s *Service) execute(ctx context.Context, jobID int64, attempt int, name string) error {
	run, until, err := s.claim(ctx, jobID, name)
	if run == nil || err != nil {
		return err
	}
	bg := context.WithoutCancel(ctx)
	trainCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	epoch := run.LeaseEpoch
	lease := s.holdLease(bg, name, jobID, epoch, until, cancel)
	defer lease.stop()
	end := func(status store.RunStatus, reason, message string) {
		s.finishIf(bg, name, store.RunCond{JobID: jobID, Epoch: &epoch}, status, reason, message)
	}
	p, workDir, err := s.startWork(run)
	if err != nil {
		lease.stop()
		end(store.StatusFailed, err.Error(), "")
		return nil
	}
	tr, err := s.startTracking(bg, name, jobID, workDir, lease)
	if err != nil {
		lease.stop()
		end(store.StatusFailed, fmt.Sprintf("open the run's journal: %v", err), "")
		return nil
	}
	defer tr.close()
	if !run.StartedAt.IsZero() {
		tr.event(string(store.StatusStarting), "worker %s resumes the run (attempt %d) from the last checkpoint in %s", s.cfg.WorkerID, attempt, workDir)
	} else {
		tr.event(string(store.StatusStarting), "worker %s picked up the run; preparing data in %s", s.cfg.WorkerID, workDir)
	}
	obs := s.newObserver(name, jobID, tr, workDir)
	var res *train.Result
	var trainErr error
	if p.Request.Nodes > 1 {
		res, trainErr = s.lead(trainCtx, run, p, workDir, obs, tr)
	} else {
		res, trainErr = s.trainBounded(trainCtx, p.Spec, workDir, obs)
	}
	cause := context.Cause(trainCtx)
	if errors.Is(cause, errLeaseLost) || lease.isLost() {
		s.log.Warn("lease lost; leaving the run to its new job", "run", name, "job", jobID)
		return nil
	}
	var version string
	var requeue *errRequeue
	if trainErr == nil {
		if version, err = s.registerFenced(bg, lease, p, res); errors.Is(err, errLeaseLost) {
			s.log.Warn("lease lost before registering; leaving the run to its new job", "run", name, "job", jobID)
			return nil
		} else if err != nil {
			trainErr = fmt.Errorf("register the final model: %w", err)
		}
	}
	// The records first, so the outcome's event comes after them. A
	// worker shutting down waits briefly: its run resumes elsewhere.
	if ctx.Err() != nil {
		tr.flush(min(s.cfg.StoreWait, 5*time.Second))
	} else {
		tr.flush(s.cfg.StoreWait)
	}
	lease.stop()
	if lease.isLost() {
		return nil
	}
	switch {
	case trainErr == nil:
		end(store.StatusCompleted, "", fmt.Sprintf("trained %d steps (%d tokens, train loss %.4g); registered as %s",
			res.Steps, res.TokensSeen, res.TrainLoss, version))
	case res != nil: // trained, but the registration failed
		end(store.StatusFailed, trainErr.Error(), "")
	case errors.Is(cause, errStopRequested):
		end(store.StatusStopped, "", "cancelled at step "+obs.progress())
	case ctx.Err() != nil:
		// This worker is shutting down: free the lease so the run resumes
		// from its checkpoint on the next worker to take the job.
		s.release(bg, name, jobID)
		s.event(bg, name, string(store.StatusQueued), "worker %s shut down at step %s; re-queued to resume",
			s.cfg.WorkerID, obs.progress())
		return river.JobSnooze(0)
	case errors.As(trainErr, &requeue):
		return s.requeueGang(bg, name, jobID, epoch, requeue.msg)
	default:
		end(store.StatusFailed, trainErr.Error(), "")
	}
	return nil
}

// claim fences stale jobs and takes the run's lease, moving its epoch on.
// It returns a nil run when this job has nothing (more) to do, else the
// run as claimed and when the lease expires.
func (s *Service) claim(ctx context.Context, jobID int64, name string) (*store.Run, time.Time, error) {
	now := s.clock()
	run, err := s.st.GetRun(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, time.Time{}, nil // deleted meanwhile
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	if run.JobID != jobID || run.Status.Terminal() {
		s.log.Info("stale job ignored", "run", name, "job", jobID, "run_job", run.JobID, "status", run.Status)
		return nil, time.Time{}, nil
	}
	if run.Status == store.StatusStopping {
		s.finish(ctx, name, jobID, store.StatusStopped, "", "cancelled before training resumed")
		return nil, time.Time{}, nil
	}
	starting, owner, until := store.StatusStarting, s.cfg.WorkerID, now.Add(s.cfg.LeaseTTL)
	epoch, next := run.LeaseEpoch, run.LeaseEpoch+1
	up := store.RunUpdate{Status: &starting, LeaseOwner: &owner, LeaseUntil: &until, LeaseEpoch: &next}
	if run.StartedAt.IsZero() {
		up.StartedAt = &now
	}
	ok, err := s.st.UpdateRun(ctx, name, store.RunCond{
		Statuses: []store.RunStatus{store.StatusPending, store.StatusQueued, store.StatusStarting, store.StatusRunning},
		JobID:    jobID, LeaseFreeAt: now, Owner: owner, Epoch: &epoch}, up)
	if err != nil {
		return nil, time.Time{}, err
	}
	if !ok {
		// Another live worker holds the lease, or the run moved on: look
		// again after the lease would have expired.
		return nil, time.Time{}, river.JobSnooze(s.cfg.LeaseTTL)
	}
	run.LeaseEpoch = next
	return run, until, nil
}

// startWork decodes the run's parameters, confines its paths again (they
// may have changed since the run was created) and prepares the work
// directory.
func (s *Service) startWork(run *store.Run) (*params, string, error) {
	p, err := decodeParams(run)
	if err != nil {
		return nil, "", err
	}
	if err := s.confineParams(p); err != nil {
		return nil, "", fmt.Errorf("inputs changed since the run was created: %w", err)
	}
	workDir := filepath.Join(s.runDir(run.Name), "work")
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, "", fmt.Errorf("create work directory: %w", err)
	}
	return p, workDir, nil
}

// finish moves the run to a terminal state (if this job still owns it),
// frees the lease and records the event.
func (s *Service) finish(ctx context.Context, name string, jobID int64, status store.RunStatus, reason, message string) {
	s.finishIf(ctx, name, store.RunCond{JobID: jobID}, status, reason, message)
}

// finishIf is finish under cond (plus: the run is not yet terminal). A
// store that does not answer is tried again for up to StoreWait, so an
// outage at the end of a run does not leave it RUNNING.
func (s *Service) finishIf(ctx context.Context, name string, cond store.RunCond, status store.RunStatus, reason, message string) bool {
	now, empty, zero := s.clock(), "", time.Time{}
	up := store.RunUpdate{Status: &status, CompletedAt: &now, LeaseOwner: &empty, LeaseUntil: &zero}
	if reason != "" {
		up.Error = &reason
	}
	if message == "" {
		message = reason
	}
	cond.Statuses = []store.RunStatus{store.StatusPending, store.StatusQueued, store.StatusStarting, store.StatusRunning, store.StatusStopping}
	deadline, wait := time.Now().Add(s.cfg.StoreWait), s.cfg.RetryEvery
	for {
		ok, err := s.transition(ctx, name, cond, up, string(status), message)
		if err == nil && ok {
			s.log.Info("run finished", "run", name, "status", status, "message", message)
			return true
		}
		if err == nil || errors.Is(err, store.ErrNotFound) || ctx.Err() != nil || time.Now().After(deadline) {
			s.log.Warn("finish run", "run", name, "status", status, "updated", ok, "err", err)
			return false
		}
		s.log.Warn("finish run: store does not answer; trying again", "run", name, "status", status, "err", err)
		time.Sleep(wait)
		wait = min(2*wait, 16*s.cfg.RetryEvery)
	}
}

func (s *Service) release(ctx context.Context, name string, jobID int64) {
	empty, zero := "", time.Time{}
	if _, err := s.st.UpdateRun(ctx, name, store.RunCond{JobID: jobID, HeldBy: s.cfg.WorkerID},
		store.RunUpdate{LeaseOwner: &empty, LeaseUntil: &zero}); err != nil {
		s.log.Warn("release lease", "run", name, "err", err)
	}
}

// registerFenced registers the final model under the lease's fence; while
// the store does not answer it tries again, for up to StoreWait.
func (s *Service) registerFenced(ctx context.Context, k *leaseKeeper, p *params, res *train.Result) (string, error) {
	deadline, wait, wasDown := time.Now().Add(s.cfg.StoreWait), s.cfg.RetryEvery, false
	for {
		if err := s.fence(k); err != nil {
			return "", err
		}
		version, err := s.register(ctx, k.name, k.jobID, k.epoch, p, res)
		if err == nil {
			return version, nil
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		down := s.st.Ping(pctx) != nil
		cancel()
		// Once more after the store came back: the failure may have been
		// the outage's.
		if !down && !wasDown || time.Now().After(deadline) {
			return "", err
		}
		if down && !wasDown {
			s.log.Warn("register: store does not answer; trying again", "run", k.name, "err", err)
		}
		wasDown = down
		time.Sleep(wait)
		wait = min(2*wait, 16*s.cfg.RetryEvery)
	}
}

// register puts the final model in the catalog and records the version.
func (s *Service) register(ctx context.Context, name string, jobID, epoch int64, p *params, res *train.Result) (string, error) {
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
	reg := catalog.Registration{Target: target, SourceDir: res.ModelDir, Move: true, Run: name,
		BaseModel: p.Model.BaseModel, DataFingerprint: res.DataFingerprint, Metrics: string(mj), License: p.Model.License}
	if p.Request.RegisterAdapter {
		// The adapter alone: its lineage names the base version it needs
		// (its adapter_config.json names the base's directory).
		reg.SourceDir, reg.BaseModel = res.AdapterDir, cmp.Or(p.BaseVersion, p.Model.Ref)
	}
	v, err := s.cat.Register(ctx, reg)
	if err != nil {
		return "", err
	}
	ref := fmt.Sprintf("%s/%d", p.Target, v.Version)
	if _, err := s.st.UpdateRun(ctx, name, store.RunCond{JobID: jobID, Epoch: &epoch}, store.RunUpdate{ModelVersion: &ref}); err != nil {
		return "", err
	}
	return ref, nil
}
