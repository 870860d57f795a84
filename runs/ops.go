package runs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"hone/client"
	"hone/store"
)

// Get returns the run with its events, checkpoints and latest metrics.
func (s *Service) Get(ctx context.Context, name string) (*client.Run, error) {
	r, err := s.st.GetRun(ctx, name)
	if err != nil {
		return nil, err
	}
	out := s.view(r)
	evs, err := s.st.ListEvents(ctx, name, 0)
	if err != nil {
		return nil, err
	}
	out.Events = eventViews(evs)
	cks, err := s.st.ListCheckpoints(ctx, name)
	if err != nil {
		return nil, err
	}
	out.Checkpoints = checkpointViews(cks)
	ranks, err := s.st.ListRanks(ctx, name)
	if err != nil {
		return nil, err
	}
	out.Ranks = rankViews(ranks)
	last, err := s.st.LatestStep(ctx, name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if last != nil {
		m := &client.LatestMetrics{Step: last.Step, TotalSteps: last.TotalSteps, Epoch: last.Epoch, Loss: fp(last.Loss),
			LR: last.LR, GradNorm: fp(last.GradNorm), TokensPerSec: last.TokensPerSec, TokensSeen: last.TokensSeen,
			ElapsedS: last.Elapsed.Seconds()}
		evals, err := s.st.ListEvals(ctx, name)
		if err != nil {
			return nil, err
		}
		if n := len(evals); n > 0 {
			e := evals[n-1]
			m.EvalLoss, m.Perplexity, m.TokenAccuracy = fp(e.Loss), fp(e.Perplexity), fp(e.TokenAccuracy)
		}
		out.Metrics = m
	}
	return out, nil
}

func (s *Service) view(r *store.Run) *client.Run {
	out := &client.Run{Name: r.Name, User: r.User, ExperimentPath: r.ExperimentPath, Status: string(r.Status),
		RegisterTo: r.RegisterTo, RegisteredModel: r.ModelVersion, Error: r.Error, CreatedAt: r.CreatedAt,
		StartedAt: tp(r.StartedAt), EstimatedEndAt: tp(r.EstimatedEndAt), CompletedAt: tp(r.CompletedAt)}
	if p, err := decodeParams(r); err == nil {
		out.Config, out.BaseModel, out.ModelDir, out.Validation = p.Request, p.Model.BaseModel, p.Model.Dir, p.Validation
		out.Config.Method, out.Config.LoRA = showLoRA(p.Spec) // as resolved: the defaults it trains with
	}
	return out
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func fp(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

func eventViews(evs []store.Event) []client.Event {
	out := make([]client.Event, len(evs))
	for i, e := range evs {
		out[i] = client.Event{ID: e.ID, Type: e.Type, Time: e.Time, Message: e.Message}
	}
	return out
}

func checkpointViews(cks []store.Checkpoint) []client.Checkpoint {
	out := make([]client.Checkpoint, len(cks))
	for i, c := range cks {
		out[i] = client.Checkpoint{Step: c.Step, Epoch: c.Epoch, Path: c.Dir, Time: c.Time}
	}
	return out
}

// List returns one page of runs, newest first.
func (s *Service) List(ctx context.Context, o client.ListRunsOptions) (*client.RunList, error) {
	f := store.RunFilter{User: o.User, ExperimentPath: o.ExperimentPath, CreatedAfter: o.CreatedAfter,
		CreatedBefore: o.CreatedBefore, Limit: o.Limit, PageToken: o.PageToken}
	for _, st := range o.Status {
		if !store.RunStatus(st).Valid() {
			return nil, invalidf("status %q is not a run state", st)
		}
		f.Statuses = append(f.Statuses, store.RunStatus(st))
	}
	if o.Limit < 0 || o.Limit > 1000 {
		return nil, invalidf("limit %d must be in [1, 1000]", o.Limit)
	}
	rs, next, err := s.st.ListRuns(ctx, f)
	if errors.Is(err, store.ErrBadPageToken) {
		return nil, invalidf("page_token: %v", err)
	}
	if err != nil {
		return nil, err
	}
	out := &client.RunList{Runs: make([]client.Run, len(rs)), NextPageToken: next}
	for i := range rs {
		out.Runs[i] = *s.view(&rs[i])
	}
	return out, nil
}

// Events returns one page of the run's events after the one with ID
// o.After.
func (s *Service) Events(ctx context.Context, name string, o client.ListEventsOptions) (*client.EventList, error) {
	if _, err := s.st.GetRun(ctx, name); err != nil {
		return nil, err
	}
	evs, next, err := s.st.PageEvents(ctx, name, o.After, page(o.PageOptions))
	if err != nil {
		return nil, err
	}
	return &client.EventList{Events: eventViews(evs), NextPageToken: next}, nil
}

func page(o client.PageOptions) store.Page { return store.Page{Limit: o.Limit, Token: o.PageToken} }

// Metrics returns one page of the run's step series, with the evaluations
// of the same steps.
func (s *Service) Metrics(ctx context.Context, name string, o client.PageOptions) (*client.Metrics, error) {
	if _, err := s.st.GetRun(ctx, name); err != nil {
		return nil, err
	}
	steps, evals, next, err := s.st.PageMetrics(ctx, name, page(o))
	if err != nil {
		return nil, err
	}
	out := &client.Metrics{Steps: make([]client.StepMetric, len(steps)), Evals: make([]client.EvalMetric, len(evals)), NextPageToken: next}
	for i, m := range steps {
		out.Steps[i] = client.StepMetric{Step: m.Step, TotalSteps: m.TotalSteps, Epoch: m.Epoch, Loss: fp(m.Loss), LR: m.LR,
			GradNorm: fp(m.GradNorm), TokensPerSec: m.TokensPerSec, TokensSeen: m.TokensSeen, ElapsedS: m.Elapsed.Seconds(), Time: m.Time}
	}
	for i, e := range evals {
		out.Evals[i] = client.EvalMetric{Step: e.Step, Loss: fp(e.Loss), Perplexity: fp(e.Perplexity), TokenAccuracy: fp(e.TokenAccuracy), Time: e.Time}
	}
	return out, nil
}

// Checkpoints returns one page of the run's checkpoints.
func (s *Service) Checkpoints(ctx context.Context, name string, o client.PageOptions) (*client.CheckpointList, error) {
	if _, err := s.st.GetRun(ctx, name); err != nil {
		return nil, err
	}
	cks, next, err := s.st.PageCheckpoints(ctx, name, page(o))
	if err != nil {
		return nil, err
	}
	return &client.CheckpointList{Checkpoints: checkpointViews(cks), NextPageToken: next}, nil
}

// PromptOutputs returns one page of the run's eval-prompt completions.
func (s *Service) PromptOutputs(ctx context.Context, name string, o client.PageOptions) (*client.PromptOutputList, error) {
	if _, err := s.st.GetRun(ctx, name); err != nil {
		return nil, err
	}
	pos, next, err := s.st.PagePromptOutputs(ctx, name, page(o))
	if err != nil {
		return nil, err
	}
	out := &client.PromptOutputList{PromptOutputs: make([]client.PromptOutput, len(pos)), NextPageToken: next}
	for i, p := range pos {
		out.PromptOutputs[i] = client.PromptOutput{Step: p.Step, Index: p.Index, Prompt: p.Prompt, Output: p.Output, Time: p.Time}
	}
	return out, nil
}

// Experiments returns one page of the experiments.
func (s *Service) Experiments(ctx context.Context, o client.PageOptions) (*client.ExperimentList, error) {
	es, next, err := s.st.PageExperiments(ctx, page(o))
	if err != nil {
		return nil, err
	}
	out := &client.ExperimentList{Experiments: make([]client.Experiment, len(es)), NextPageToken: next}
	for i, e := range es {
		out.Experiments[i] = client.Experiment{Path: e.Path, User: e.User, CreatedAt: e.CreatedAt, Runs: e.Runs}
	}
	return out, nil
}

// Cancel stops the named runs, or every active run of an experiment.
// Queued runs stop at once; running ones go to STOPPING and their worker
// stops them within one optimizer step. Finished runs are left alone.
func (s *Service) Cancel(ctx context.Context, req client.CancelRequest) (*client.CancelResult, error) {
	names := req.Names
	if (len(names) == 0) == (req.ExperimentPath == "") {
		return nil, invalidf("cancel: name runs or an experiment_path (not both)")
	}
	if req.ExperimentPath != "" {
		tok := ""
		for {
			page, next, err := s.st.ListRuns(ctx, store.RunFilter{ExperimentPath: req.ExperimentPath, Limit: 1000, PageToken: tok,
				Statuses: []store.RunStatus{store.StatusPending, store.StatusQueued, store.StatusStarting, store.StatusRunning}})
			if err != nil {
				return nil, err
			}
			for _, r := range page {
				names = append(names, r.Name)
			}
			if next == "" {
				break
			}
			tok = next
		}
	} else {
		for _, n := range names { // all must exist before any is touched
			if _, err := s.st.GetRun(ctx, n); err != nil {
				return nil, err
			}
		}
	}
	out := &client.CancelResult{Runs: []client.Run{}}
	for _, n := range names {
		if err := s.cancelOne(ctx, n); err != nil {
			return nil, err
		}
		r, err := s.st.GetRun(ctx, n)
		if err != nil {
			return nil, err
		}
		out.Runs = append(out.Runs, *s.view(r))
	}
	return out, nil
}

func (s *Service) cancelOne(ctx context.Context, name string) error {
	for range 5 {
		r, err := s.st.GetRun(ctx, name)
		if err != nil {
			return err
		}
		now := s.clock()
		switch r.Status {
		case store.StatusCompleted, store.StatusFailed, store.StatusStopped, store.StatusStopping:
			return nil
		case store.StatusPending, store.StatusQueued:
			stopped := store.StatusStopped
			ok, err := s.transition(ctx, name, store.RunCond{JobID: r.JobID, Statuses: []store.RunStatus{r.Status}},
				store.RunUpdate{Status: &stopped, CompletedAt: &now}, string(store.StatusStopped), "cancelled before training started")
			if err != nil {
				return err
			}
			if !ok {
				continue // a worker took it meanwhile
			}
			s.stopValidation(name)
			if r.JobID != 0 {
				if err := s.q.cancel(ctx, r.JobID); err != nil {
					s.log.Warn("cancel queue job", "run", name, "job", r.JobID, "err", err)
				}
			}
			return nil
		case store.StatusStarting, store.StatusRunning:
			stopping := store.StatusStopping
			ok, err := s.transition(ctx, name, store.RunCond{JobID: r.JobID, Statuses: []store.RunStatus{r.Status}},
				store.RunUpdate{Status: &stopping}, string(store.StatusStopping), "cancel requested; stopping within one optimizer step")
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			return nil
		}
	}
	return fmt.Errorf("cancel %s: the run kept changing state", name)
}

// Resume re-queues a STOPPED or FAILED run with its original settings;
// training continues from its last checkpoint (or starts over if it never
// saved one) and ends with the weights an uninterrupted run would have.
func (s *Service) Resume(ctx context.Context, name string) (*client.Run, error) {
	r, err := s.st.GetRun(ctx, name)
	if err != nil {
		return nil, err
	}
	if r.Status != store.StatusStopped && r.Status != store.StatusFailed {
		return nil, statef("run %s is %s: only STOPPED or FAILED runs can be resumed", name, r.Status)
	}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		id, err := s.q.insertTx(ctx, tx, TrainArgs{Run: name})
		if err != nil {
			return err
		}
		queued, zero, empty := store.StatusQueued, time.Time{}, ""
		ok, err := tx.UpdateRun(ctx, name, store.RunCond{JobID: r.JobID, Statuses: []store.RunStatus{r.Status}},
			store.RunUpdate{Status: &queued, JobID: &id, CompletedAt: &zero, Error: &empty, LeaseOwner: &empty, LeaseUntil: &zero})
		if err != nil {
			return err
		}
		if !ok {
			return statef("run %s changed state meanwhile; look again", name)
		}
		return tx.AddEvent(ctx, name, store.Event{Time: s.clock(), Type: string(store.StatusQueued),
			Message: fmt.Sprintf("resumed after %s; training continues from the last checkpoint", r.Status)})
	})
	if err != nil {
		return nil, err
	}
	return s.Get(ctx, name)
}

// Delete removes a finished (or cancelled) run, its tracking and its files.
// Catalog versions registered from it stay. The status check is part of
// the DELETE, in one transaction, so a concurrent Resume either sees the
// run gone (and enqueues nothing) or wins and the delete is refused.
func (s *Service) Delete(ctx context.Context, name string) error {
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ok, err := tx.DeleteRunIn(ctx, name, []store.RunStatus{store.StatusCompleted, store.StatusFailed, store.StatusStopped})
		if err != nil || ok {
			return err
		}
		r, err := tx.GetRun(ctx, name)
		if err != nil {
			return err
		}
		return statef("run %s is %s: cancel it first (hone runs cancel %s)", name, r.Status, name)
	})
	if err != nil {
		return err
	}
	if err := os.RemoveAll(s.runDir(name)); err != nil {
		s.log.Warn("delete run files", "run", name, "err", err)
	}
	s.log.Info("run deleted", "run", name)
	return nil
}
