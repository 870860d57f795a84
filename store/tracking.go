package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"time"
)

// Event is one entry of a run's history.
type Event struct {
	ID      int64
	Time    time.Time
	Type    string
	Message string
	// Key, when set, makes the insert idempotent: an event whose key the
	// run already has is not added again (a journal's redelivery).
	Key string
}

// AddEvent appends an event to the run's history.
func (o ops) AddEvent(ctx context.Context, run string, e Event) error {
	var key any
	if e.Key != "" {
		key = e.Key
	}
	_, err := o.q.exec(ctx, `INSERT INTO hone_run_events (run_name, time, type, message, journal_key) VALUES (?,?,?,?,?)
		ON CONFLICT (run_name, journal_key) DO NOTHING`,
		run, micros(e.Time), e.Type, e.Message, key)
	if err != nil {
		return fmt.Errorf("store: add event to %s: %w", run, err)
	}
	return nil
}

// ListEvents returns the run's events with ID > afterID, oldest first.
func (o ops) ListEvents(ctx context.Context, run string, afterID int64) ([]Event, error) {
	return o.events(ctx, run, afterID, 0)
}

// events lists at most limit events (limit <= 0: all).
func (o ops) events(ctx context.Context, run string, afterID int64, limit int) ([]Event, error) {
	out := []Event{}
	err := o.all(ctx, `SELECT id, time, type, message, COALESCE(journal_key, '') FROM hone_run_events WHERE run_name = ? AND id > ? ORDER BY id`+limitSQL(limit),
		[]any{run, afterID}, func(r rows) error {
			var e Event
			var t int64
			err := r.Scan(&e.ID, &t, &e.Type, &e.Message, &e.Key)
			e.Time = fromMicros(t)
			out = append(out, e)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("store: list events of %s: %w", run, err)
	}
	return out, nil
}

// StepMetric is one optimizer step's measurements.
type StepMetric struct {
	Step, TotalSteps int
	Epoch            float64
	Loss, LR         float64
	GradNorm         float64
	TokensPerSec     float64
	TokensSeen       int64
	Elapsed          time.Duration
	Time             time.Time
}

// nullable stores NaN and ±Inf as NULL (SQLite cannot hold NaN).
func nullable(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return f
}

func orNaN(n sql.NullFloat64) float64 {
	if !n.Valid {
		return math.NaN()
	}
	return n.Float64
}

// RecordStep stores (or, after a resume, replaces) a step's metrics.
func (o ops) RecordStep(ctx context.Context, run string, m StepMetric) error {
	_, err := o.q.exec(ctx, `INSERT INTO hone_step_metrics
		(run_name, step, total_steps, epoch, loss, lr, grad_norm, tokens_per_sec, tokens_seen, elapsed_us, time)
		VALUES (?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (run_name, step) DO UPDATE SET total_steps = excluded.total_steps, epoch = excluded.epoch,
		loss = excluded.loss, lr = excluded.lr, grad_norm = excluded.grad_norm, tokens_per_sec = excluded.tokens_per_sec,
		tokens_seen = excluded.tokens_seen, elapsed_us = excluded.elapsed_us, time = excluded.time`,
		run, m.Step, m.TotalSteps, m.Epoch, nullable(m.Loss), m.LR, nullable(m.GradNorm), m.TokensPerSec,
		m.TokensSeen, m.Elapsed.Microseconds(), micros(m.Time))
	if err != nil {
		return fmt.Errorf("store: record step %d of %s: %w", m.Step, run, err)
	}
	return nil
}

// ListSteps returns the run's step metrics in step order; afterStep
// skips steps <= afterStep.
func (o ops) ListSteps(ctx context.Context, run string, afterStep int) ([]StepMetric, error) {
	return o.steps(ctx, run, afterStep, 0)
}

// steps lists at most limit steps (limit <= 0: all).
func (o ops) steps(ctx context.Context, run string, afterStep, limit int) ([]StepMetric, error) {
	out := []StepMetric{}
	err := o.all(ctx, `SELECT step, total_steps, epoch, loss, lr, grad_norm, tokens_per_sec, tokens_seen, elapsed_us, time
		FROM hone_step_metrics WHERE run_name = ? AND step > ? ORDER BY step`+limitSQL(limit), []any{run, afterStep}, func(r rows) error {
		var m StepMetric
		var loss, gn sql.NullFloat64
		var el, t int64
		err := r.Scan(&m.Step, &m.TotalSteps, &m.Epoch, &loss, &m.LR, &gn, &m.TokensPerSec, &m.TokensSeen, &el, &t)
		m.Loss, m.GradNorm, m.Elapsed, m.Time = orNaN(loss), orNaN(gn), time.Duration(el)*time.Microsecond, fromMicros(t)
		out = append(out, m)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list steps of %s: %w", run, err)
	}
	return out, nil
}

// LatestStep returns the run's highest recorded step, or ErrNotFound.
func (o ops) LatestStep(ctx context.Context, run string) (*StepMetric, error) {
	var m StepMetric
	var loss, gn sql.NullFloat64
	var el, t int64
	err := o.one(ctx, `SELECT step, total_steps, epoch, loss, lr, grad_norm, tokens_per_sec, tokens_seen, elapsed_us, time
		FROM hone_step_metrics WHERE run_name = ? ORDER BY step DESC LIMIT 1`, []any{run},
		&m.Step, &m.TotalSteps, &m.Epoch, &loss, &m.LR, &gn, &m.TokensPerSec, &m.TokensSeen, &el, &t)
	if err != nil {
		return nil, fmt.Errorf("store: latest step of %s: %w", run, err)
	}
	m.Loss, m.GradNorm, m.Elapsed, m.Time = orNaN(loss), orNaN(gn), time.Duration(el)*time.Microsecond, fromMicros(t)
	return &m, nil
}

// EvalMetric is one evaluation's measurements.
type EvalMetric struct {
	Step                            int
	Loss, Perplexity, TokenAccuracy float64
	Time                            time.Time
}

// RecordEval stores (or replaces) an evaluation.
func (o ops) RecordEval(ctx context.Context, run string, m EvalMetric) error {
	_, err := o.q.exec(ctx, `INSERT INTO hone_eval_metrics (run_name, step, loss, perplexity, token_accuracy, time)
		VALUES (?,?,?,?,?,?) ON CONFLICT (run_name, step) DO UPDATE SET loss = excluded.loss,
		perplexity = excluded.perplexity, token_accuracy = excluded.token_accuracy, time = excluded.time`,
		run, m.Step, nullable(m.Loss), nullable(m.Perplexity), nullable(m.TokenAccuracy), micros(m.Time))
	if err != nil {
		return fmt.Errorf("store: record eval of %s: %w", run, err)
	}
	return nil
}

// ListEvals returns the run's evaluations in step order.
func (o ops) ListEvals(ctx context.Context, run string) ([]EvalMetric, error) {
	return o.evals(ctx, run, math.MinInt32, math.MaxInt32)
}

// evals lists the evaluations of steps in (after, upTo].
func (o ops) evals(ctx context.Context, run string, after, upTo int) ([]EvalMetric, error) {
	out := []EvalMetric{}
	err := o.all(ctx, `SELECT step, loss, perplexity, token_accuracy, time FROM hone_eval_metrics
		WHERE run_name = ? AND step > ? AND step <= ? ORDER BY step`, []any{run, after, upTo}, func(r rows) error {
		var m EvalMetric
		var l, p, a sql.NullFloat64
		var t int64
		err := r.Scan(&m.Step, &l, &p, &a, &t)
		m.Loss, m.Perplexity, m.TokenAccuracy, m.Time = orNaN(l), orNaN(p), orNaN(a), fromMicros(t)
		out = append(out, m)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list evals of %s: %w", run, err)
	}
	return out, nil
}

// Checkpoint is a saved training state.
type Checkpoint struct {
	Step  int
	Epoch float64
	Dir   string
	Time  time.Time
}

// RecordCheckpoint stores (or replaces) a checkpoint.
func (o ops) RecordCheckpoint(ctx context.Context, run string, c Checkpoint) error {
	_, err := o.q.exec(ctx, `INSERT INTO hone_checkpoints (run_name, step, epoch, dir, time) VALUES (?,?,?,?,?)
		ON CONFLICT (run_name, step) DO UPDATE SET epoch = excluded.epoch, dir = excluded.dir, time = excluded.time`,
		run, c.Step, c.Epoch, c.Dir, micros(c.Time))
	if err != nil {
		return fmt.Errorf("store: record checkpoint of %s: %w", run, err)
	}
	return nil
}

// DeleteCheckpoint forgets the checkpoint of run at step.
func (o ops) DeleteCheckpoint(ctx context.Context, run string, step int) error {
	if _, err := o.q.exec(ctx, `DELETE FROM hone_checkpoints WHERE run_name = ? AND step = ?`, run, step); err != nil {
		return fmt.Errorf("store: delete checkpoint %d of %s: %w", step, run, err)
	}
	return nil
}

// ListCheckpoints returns the run's checkpoints in step order.
func (o ops) ListCheckpoints(ctx context.Context, run string) ([]Checkpoint, error) {
	return o.checkpoints(ctx, run, -1, 0)
}

// checkpoints lists at most limit checkpoints after afterStep (limit <= 0:
// all).
func (o ops) checkpoints(ctx context.Context, run string, afterStep, limit int) ([]Checkpoint, error) {
	out := []Checkpoint{}
	err := o.all(ctx, `SELECT step, epoch, dir, time FROM hone_checkpoints WHERE run_name = ? AND step > ? ORDER BY step`+limitSQL(limit),
		[]any{run, afterStep}, func(r rows) error {
			var c Checkpoint
			var t int64
			err := r.Scan(&c.Step, &c.Epoch, &c.Dir, &t)
			c.Time = fromMicros(t)
			out = append(out, c)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("store: list checkpoints of %s: %w", run, err)
	}
	return out, nil
}

// PromptOutput is one eval prompt's completion at a step.
type PromptOutput struct {
	Step   int
	Index  int
	Prompt string
	Output string
	Time   time.Time
}

// RecordPromptOutputs stores the completions made at one step.
func (o ops) RecordPromptOutputs(ctx context.Context, run string, outs []PromptOutput) error {
	for _, p := range outs {
		_, err := o.q.exec(ctx, `INSERT INTO hone_prompt_outputs (run_name, step, idx, prompt, output, time)
			VALUES (?,?,?,?,?,?) ON CONFLICT (run_name, step, idx) DO UPDATE SET prompt = excluded.prompt,
			output = excluded.output, time = excluded.time`, run, p.Step, p.Index, p.Prompt, p.Output, micros(p.Time))
		if err != nil {
			return fmt.Errorf("store: record prompt outputs of %s: %w", run, err)
		}
	}
	return nil
}

// ListPromptOutputs returns the run's completions by step, then index.
func (o ops) ListPromptOutputs(ctx context.Context, run string) ([]PromptOutput, error) {
	return o.promptOutputs(ctx, run, promptCursor{Step: -1}, 0)
}

// promptOutputs lists at most limit completions after the one at (step,
// index) (limit <= 0: all).
func (o ops) promptOutputs(ctx context.Context, run string, after promptCursor, limit int) ([]PromptOutput, error) {
	out := []PromptOutput{}
	err := o.all(ctx, `SELECT step, idx, prompt, output, time FROM hone_prompt_outputs WHERE run_name = ?
		AND (step > ? OR (step = ? AND idx > ?)) ORDER BY step, idx`+limitSQL(limit),
		[]any{run, after.Step, after.Step, after.Index}, func(r rows) error {
			var p PromptOutput
			var t int64
			err := r.Scan(&p.Step, &p.Index, &p.Prompt, &p.Output, &t)
			p.Time = fromMicros(t)
			out = append(out, p)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("store: list prompt outputs of %s: %w", run, err)
	}
	return out, nil
}

// Experiment groups runs under a path.
type Experiment struct {
	Path      string
	User      string
	CreatedAt time.Time
	Runs      int
}

// EnsureExperiment creates the experiment if it does not exist.
func (o ops) EnsureExperiment(ctx context.Context, e Experiment) error {
	_, err := o.q.exec(ctx, `INSERT INTO hone_experiments (path, user_name, created_at) VALUES (?,?,?)
		ON CONFLICT (path) DO NOTHING`, e.Path, e.User, micros(e.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: ensure experiment %s: %w", e.Path, err)
	}
	return nil
}

// ListExperiments returns the experiments by path, with their run counts.
func (o ops) ListExperiments(ctx context.Context) ([]Experiment, error) {
	return o.experiments(ctx, "", 0)
}

// experiments lists at most limit experiments with a path after afterPath
// (limit <= 0: all).
func (o ops) experiments(ctx context.Context, afterPath string, limit int) ([]Experiment, error) {
	out := []Experiment{}
	err := o.all(ctx, `SELECT e.path, e.user_name, e.created_at,
		(SELECT COUNT(*) FROM hone_runs r WHERE r.experiment_path = e.path)
		FROM hone_experiments e WHERE e.path > ? ORDER BY e.path`+limitSQL(limit), []any{afterPath}, func(r rows) error {
		var e Experiment
		var t int64
		err := r.Scan(&e.Path, &e.User, &t, &e.Runs)
		e.CreatedAt = fromMicros(t)
		out = append(out, e)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list experiments: %w", err)
	}
	return out, nil
}
