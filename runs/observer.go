package runs

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"hone/store"
	"hone/train"
)

// observer records training progress for one run through the run's
// journal (see journal.go): the store may be away, training goes on and
// loses nothing. It is also the trainer's fence (train.Fencer): a
// checkpoint or the final model is committed only while this job still
// holds the run's lease.
type observer struct {
	s       *Service
	run     string
	jobID   int64
	t       *tracker
	mu      sync.Mutex
	running bool
	last    int // last step done
	saved   int // step of the newest checkpoint on disk; 0 when none
}

var (
	_ train.Observer = (*observer)(nil)
	_ train.Fencer   = (*observer)(nil)
)

// newObserver starts from the newest checkpoint on disk, so a resumed
// run's progress reports what a stop would keep.
func (s *Service) newObserver(run string, jobID int64, t *tracker, workDir string) *observer {
	o := &observer{s: s, run: run, jobID: jobID, t: t}
	if cks, err := train.Checkpoints(workDir); err == nil {
		for _, c := range cks {
			o.saved = max(o.saved, c.Step)
		}
		o.last = o.saved
	}
	return o
}

// Fence confirms this job's lease before the trainer commits what.
func (o *observer) Fence(what string) error {
	if err := o.s.fence(o.t.lease); err != nil {
		return fmt.Errorf("commit %s: %w", what, err)
	}
	return nil
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
	now := o.s.clock()
	o.mu.Lock()
	first := !o.running
	o.running, o.last = true, m.Step
	o.mu.Unlock()
	r := record{Time: now, Step: ptr(storeStep(m, now))}
	if m.ETA > 0 {
		r.ETA = now.Add(m.ETA)
	}
	o.t.add(r)
	if first {
		o.t.add(record{Time: now, Running: &runningRec{JobID: o.jobID,
			Message: fmt.Sprintf("training: step %d of %d", m.Step, m.TotalSteps)}})
	}
}

func ptr[T any](v T) *T { return &v }

func storeStep(m train.StepMetrics, now time.Time) store.StepMetric {
	return store.StepMetric{Step: m.Step, TotalSteps: m.TotalSteps, Epoch: m.Epoch, Loss: m.Loss, LR: m.LR,
		GradNorm: m.GradNorm, TokensPerSec: m.TokensPerSec, TokensSeen: m.TokensSeen, Elapsed: m.Elapsed, Time: now}
}

func (o *observer) OnEval(m train.EvalMetrics) {
	o.t.add(record{Eval: &store.EvalMetric{Step: m.Step, Loss: m.Loss, Perplexity: m.Perplexity,
		TokenAccuracy: m.TokenAccuracy, Time: o.s.clock()}})
	o.t.event("EVAL", "step %d: eval loss %.4g, perplexity %.4g, token accuracy %.3f", m.Step, m.Loss, m.Perplexity, m.TokenAccuracy)
}

// OnCheckpoint records the checkpoint and forgets the ones the trainer
// pruned, in the same journal and in this order, so the list names the
// checkpoints still on disk.
func (o *observer) OnCheckpoint(c train.Checkpoint) {
	o.t.add(record{Ckpt: &store.Checkpoint{Step: c.Step, Epoch: c.Epoch, Dir: c.Dir, Time: o.s.clock()}})
	o.mu.Lock()
	o.saved = c.Step
	o.mu.Unlock()
	for _, step := range c.Pruned {
		o.t.add(record{Forget: ptr(step)})
	}
	o.t.event("CHECKPOINT", "step %d (epoch %.3g) saved to %s", c.Step, c.Epoch, c.Dir)
}

func (o *observer) OnPromptOutputs(step int, outs []train.PromptOutput) {
	now := o.s.clock()
	rows := make([]store.PromptOutput, len(outs))
	for i, p := range outs {
		rows[i] = store.PromptOutput{Step: step, Index: i, Prompt: p.Prompt, Output: p.Output, Time: now}
	}
	o.t.add(record{Prompts: rows})
}

func (o *observer) OnLog(msg string) {
	o.t.event("LOG", "%s", strings.TrimSpace(msg))
}
