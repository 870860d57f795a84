package runs

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"hone/store"
	"hone/train"
)

// observer records training progress for one run. Store errors are logged,
// never allowed to stop training.
type observer struct {
	s       *Service
	run     string
	jobID   int64
	mu      sync.Mutex
	running bool
	last    int // last step done
	saved   int // step of the newest checkpoint on disk; 0 when none
}

var _ train.Observer = (*observer)(nil)

// newObserver starts from the run's newest recorded checkpoint, so a
// resumed run's progress reports what a stop would keep.
func (s *Service) newObserver(ctx context.Context, run string, jobID int64) *observer {
	o := &observer{s: s, run: run, jobID: jobID}
	if cks, err := s.st.ListCheckpoints(ctx, run); err == nil {
		for _, c := range cks {
			o.saved = max(o.saved, c.Step)
		}
		o.last = o.saved
	}
	return o
}

func (o *observer) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// progress says where training stands and what a resume continues from.
func (o *observer) progress() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.saved == 0:
		return fmt.Sprintf("%d; no checkpoint was saved, so a resume starts over", o.last)
	case o.saved == o.last:
		return fmt.Sprintf("%d; its checkpoint is kept", o.last)
	default:
		return fmt.Sprintf("%d; the checkpoint of step %d is kept", o.last, o.saved)
	}
}

func (o *observer) OnStep(m train.StepMetrics) {
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

func storeStep(m train.StepMetrics, now time.Time) store.StepMetric {
	return store.StepMetric{Step: m.Step, TotalSteps: m.TotalSteps, Epoch: m.Epoch, Loss: m.Loss, LR: m.LR,
		GradNorm: m.GradNorm, TokensPerSec: m.TokensPerSec, TokensSeen: m.TokensSeen, Elapsed: m.Elapsed, Time: now}
}

func (o *observer) OnEval(m train.EvalMetrics) {
	ctx, cancel := o.ctx()
	defer cancel()
	if err := o.s.st.RecordEval(ctx, o.run, store.EvalMetric{Step: m.Step, Loss: m.Loss, Perplexity: m.Perplexity,
		TokenAccuracy: m.TokenAccuracy, Time: o.s.clock()}); err != nil {
		o.s.log.Error("record eval", "run", o.run, "err", err)
	}
	o.s.event(ctx, o.run, "EVAL", "step %d: eval loss %.4g, perplexity %.4g, token accuracy %.3f", m.Step, m.Loss, m.Perplexity, m.TokenAccuracy)
}

// OnCheckpoint records the checkpoint and forgets the ones the trainer
// pruned, so only checkpoints still on disk are listed.
func (o *observer) OnCheckpoint(c train.Checkpoint) {
	ctx, cancel := o.ctx()
	defer cancel()
	if err := o.s.st.RecordCheckpoint(ctx, o.run, store.Checkpoint{Step: c.Step, Epoch: c.Epoch, Dir: c.Dir, Time: o.s.clock()}); err != nil {
		o.s.log.Error("record checkpoint", "run", o.run, "err", err)
	}
	o.mu.Lock()
	o.saved = c.Step
	o.mu.Unlock()
	for _, step := range c.Pruned {
		if err := o.s.st.DeleteCheckpoint(ctx, o.run, step); err != nil {
			o.s.log.Warn("forget pruned checkpoint", "run", o.run, "step", step, "err", err)
		}
	}
	o.s.event(ctx, o.run, "CHECKPOINT", "step %d (epoch %.3g) saved to %s", c.Step, c.Epoch, c.Dir)
}

func (o *observer) OnPromptOutputs(step int, outs []train.PromptOutput) {
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
