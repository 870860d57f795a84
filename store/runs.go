package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// RunStatus is a run's lifecycle state (the hosted product's names).
type RunStatus string

// The run states.
const (
	StatusPending   RunStatus = "PENDING"
	StatusQueued    RunStatus = "QUEUED"
	StatusStarting  RunStatus = "STARTING"
	StatusRunning   RunStatus = "RUNNING"
	StatusCompleted RunStatus = "COMPLETED"
	StatusFailed    RunStatus = "FAILED"
	StatusStopping  RunStatus = "STOPPING"
	StatusStopped   RunStatus = "STOPPED"
)

// Terminal reports whether no further transition happens from s.
func (s RunStatus) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusStopped
}

// Valid reports whether s is one of the states.
func (s RunStatus) Valid() bool {
	switch s {
	case StatusPending, StatusQueued, StatusStarting, StatusRunning,
		StatusCompleted, StatusFailed, StatusStopping, StatusStopped:
		return true
	}
	return false
}

// Run is one fine-tuning run's row.
type Run struct {
	Name           string
	User           string
	ExperimentPath string
	Status         RunStatus
	Params         string // JSON of the submitted request
	RegisterTo     string
	JobID          int64  // the queue job that currently owns the run
	LeaseOwner     string // worker executing it; "" when none
	LeaseUntil     time.Time
	// LeaseEpoch counts the claims of the run: the fencing token of the
	// worker that holds it. A worker whose epoch is no longer the run's has
	// lost the run and may write nothing more for it.
	LeaseEpoch     int64
	CreatedAt      time.Time
	StartedAt      time.Time
	EstimatedEndAt time.Time
	CompletedAt    time.Time
	Error          string
	ModelVersion   string // "catalog.schema.model/N" once registered
}

const runCols = `name, user_name, experiment_path, status, params, register_to, job_id, lease_owner, lease_until,
	created_at, started_at, estimated_end_at, completed_at, error, model_version, lease_epoch`

func scanRun(r interface{ Scan(...any) error }) (Run, error) {
	var x Run
	var lease, created, started, est, done int64
	err := r.Scan(&x.Name, &x.User, &x.ExperimentPath, &x.Status, &x.Params, &x.RegisterTo, &x.JobID,
		&x.LeaseOwner, &lease, &created, &started, &est, &done, &x.Error, &x.ModelVersion, &x.LeaseEpoch)
	x.LeaseUntil, x.CreatedAt, x.StartedAt = fromMicros(lease), fromMicros(created), fromMicros(started)
	x.EstimatedEndAt, x.CompletedAt = fromMicros(est), fromMicros(done)
	return x, err
}

// InsertRun creates the run; ErrExists if the name is taken.
func (o ops) InsertRun(ctx context.Context, r *Run) error {
	if r.Name == "" || !r.Status.Valid() {
		return fmt.Errorf("store: insert run: name and a valid status are required")
	}
	n, err := o.q.exec(ctx, `INSERT INTO hone_runs (`+runCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (name) DO NOTHING`,
		r.Name, r.User, r.ExperimentPath, string(r.Status), r.Params, r.RegisterTo, r.JobID, r.LeaseOwner,
		micros(r.LeaseUntil), micros(r.CreatedAt), micros(r.StartedAt), micros(r.EstimatedEndAt),
		micros(r.CompletedAt), r.Error, r.ModelVersion, r.LeaseEpoch)
	if err != nil {
		return fmt.Errorf("store: insert run %s: %w", r.Name, err)
	}
	if n == 0 {
		return fmt.Errorf("run %s: %w", r.Name, ErrExists)
	}
	return nil
}

// GetRun reads one run.
func (o ops) GetRun(ctx context.Context, name string) (*Run, error) {
	var x Run
	r, err := o.q.query(ctx, `SELECT `+runCols+` FROM hone_runs WHERE name = ?`, name)
	if err != nil {
		return nil, fmt.Errorf("store: get run %s: %w", name, err)
	}
	defer r.Close()
	if !r.Next() {
		if err := r.Err(); err != nil {
			return nil, fmt.Errorf("store: get run %s: %w", name, err)
		}
		return nil, fmt.Errorf("run %s: %w", name, ErrNotFound)
	}
	if x, err = scanRun(r); err != nil {
		return nil, fmt.Errorf("store: get run %s: %w", name, err)
	}
	return &x, nil
}

// LockRun reads one run and, inside a PostgreSQL transaction, locks its row
// until the transaction ends, so a concurrent claim waits (SQLite
// transactions are serialised already).
func (o ops) LockRun(ctx context.Context, name string) (*Run, error) {
	if o.d != Postgres {
		return o.GetRun(ctx, name)
	}
	var x Run
	r, err := o.q.query(ctx, `SELECT `+runCols+` FROM hone_runs WHERE name = ? FOR UPDATE`, name)
	if err != nil {
		return nil, fmt.Errorf("store: lock run %s: %w", name, err)
	}
	defer r.Close()
	if !r.Next() {
		if err := r.Err(); err != nil {
			return nil, fmt.Errorf("store: lock run %s: %w", name, err)
		}
		return nil, fmt.Errorf("run %s: %w", name, ErrNotFound)
	}
	if x, err = scanRun(r); err != nil {
		return nil, fmt.Errorf("store: lock run %s: %w", name, err)
	}
	return &x, nil
}

// RunFilter selects runs; zero fields do not filter. Runs are listed
// newest first; PageToken continues a previous listing.
type RunFilter struct {
	User           string
	ExperimentPath string
	Statuses       []RunStatus
	CreatedAfter   time.Time // exclusive
	CreatedBefore  time.Time // exclusive
	Limit          int       // default 100, at most 1000
	PageToken      string
}

// ErrBadPageToken is returned for a page token this store did not issue.
var ErrBadPageToken = errors.New("invalid page token")

// ListRuns returns one page of runs and the token of the next page ("" at
// the end).
func (o ops) ListRuns(ctx context.Context, f RunFilter) ([]Run, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	var where []string
	var args []any
	add := func(cond string, a ...any) { where = append(where, cond); args = append(args, a...) }
	if f.User != "" {
		add("user_name = ?", f.User)
	}
	if f.ExperimentPath != "" {
		add("experiment_path = ?", f.ExperimentPath)
	}
	if len(f.Statuses) > 0 {
		ph := strings.TrimSuffix(strings.Repeat("?,", len(f.Statuses)), ",")
		a := make([]any, len(f.Statuses))
		for i, s := range f.Statuses {
			a[i] = string(s)
		}
		add("status IN ("+ph+")", a...)
	}
	if !f.CreatedAfter.IsZero() {
		add("created_at > ?", micros(f.CreatedAfter))
	}
	if !f.CreatedBefore.IsZero() {
		add("created_at < ?", micros(f.CreatedBefore))
	}
	if f.PageToken != "" {
		at, name, err := decodePageToken(f.PageToken)
		if err != nil {
			return nil, "", err
		}
		add("(created_at < ? OR (created_at = ? AND name < ?))", at, at, name)
	}
	q := `SELECT ` + runCols + ` FROM hone_runs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, name DESC LIMIT " + strconv.Itoa(limit+1)
	var out []Run
	err := o.all(ctx, q, args, func(r rows) error {
		x, err := scanRun(r)
		out = append(out, x)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("store: list runs: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodePageToken(micros(last.CreatedAt), last.Name)
	}
	return out, next, nil
}

func encodePageToken(at int64, name string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at, 10) + "|" + name))
}

func decodePageToken(tok string) (int64, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, "", ErrBadPageToken
	}
	at, name, ok := strings.Cut(string(b), "|")
	n, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil {
		return 0, "", ErrBadPageToken
	}
	return n, name, nil
}

// RunCond guards an update; zero fields do not constrain.
type RunCond struct {
	Statuses []RunStatus // current status must be one of these
	JobID    int64       // current job_id must equal this
	// LeaseFreeAt, when set, requires the lease to be free, expired before
	// this time, or held by Owner.
	LeaseFreeAt time.Time
	Owner       string
	// HeldBy, when set, requires the lease to be held by this owner, and
	// HeldUntil, when also set, to expire at exactly this time: a
	// compare-and-set on the lease as read, so a renewed lease is not taken.
	HeldBy    string
	HeldUntil time.Time
	// Epoch, when set, requires lease_epoch to equal *Epoch: the fencing
	// token of a claim.
	Epoch *int64
}

// RunUpdate sets the non-nil fields.
type RunUpdate struct {
	Status         *RunStatus
	JobID          *int64
	LeaseOwner     *string
	LeaseUntil     *time.Time
	LeaseEpoch     *int64
	StartedAt      *time.Time
	EstimatedEndAt *time.Time
	CompletedAt    *time.Time
	Error          *string
	ModelVersion   *string
	// Params replaces the run's JSON params: a background validation adds
	// its data report.
	Params *string
}

// UpdateRun applies up to the run if cond holds, and reports whether it did.
// ErrNotFound if the run does not exist.
func (o ops) UpdateRun(ctx context.Context, name string, cond RunCond, up RunUpdate) (bool, error) {
	var sets []string
	var args []any
	set := func(col string, v any) { sets = append(sets, col+" = ?"); args = append(args, v) }
	if up.Status != nil {
		set("status", string(*up.Status))
	}
	if up.JobID != nil {
		set("job_id", *up.JobID)
	}
	if up.LeaseOwner != nil {
		set("lease_owner", *up.LeaseOwner)
	}
	if up.LeaseUntil != nil {
		set("lease_until", micros(*up.LeaseUntil))
	}
	if up.LeaseEpoch != nil {
		set("lease_epoch", *up.LeaseEpoch)
	}
	if up.StartedAt != nil {
		set("started_at", micros(*up.StartedAt))
	}
	if up.EstimatedEndAt != nil {
		set("estimated_end_at", micros(*up.EstimatedEndAt))
	}
	if up.CompletedAt != nil {
		set("completed_at", micros(*up.CompletedAt))
	}
	if up.Error != nil {
		set("error", *up.Error)
	}
	if up.ModelVersion != nil {
		set("model_version", *up.ModelVersion)
	}
	if up.Params != nil {
		set("params", *up.Params)
	}
	if len(sets) == 0 {
		return false, errors.New("store: update run: nothing to set")
	}
	where := []string{"name = ?"}
	args = append(args, name)
	if len(cond.Statuses) > 0 {
		ph := strings.TrimSuffix(strings.Repeat("?,", len(cond.Statuses)), ",")
		where = append(where, "status IN ("+ph+")")
		for _, s := range cond.Statuses {
			args = append(args, string(s))
		}
	}
	if cond.JobID != 0 {
		where = append(where, "job_id = ?")
		args = append(args, cond.JobID)
	}
	if !cond.LeaseFreeAt.IsZero() {
		where = append(where, "(lease_owner = '' OR lease_until < ? OR lease_owner = ?)")
		args = append(args, micros(cond.LeaseFreeAt), cond.Owner)
	}
	if cond.HeldBy != "" {
		where = append(where, "lease_owner = ?")
		args = append(args, cond.HeldBy)
		if !cond.HeldUntil.IsZero() {
			where = append(where, "lease_until = ?")
			args = append(args, micros(cond.HeldUntil))
		}
	}
	if cond.Epoch != nil {
		where = append(where, "lease_epoch = ?")
		args = append(args, *cond.Epoch)
	}
	n, err := o.q.exec(ctx, "UPDATE hone_runs SET "+strings.Join(sets, ", ")+" WHERE "+strings.Join(where, " AND "), args...)
	if err != nil {
		return false, fmt.Errorf("store: update run %s: %w", name, err)
	}
	if n == 0 {
		if _, err := o.GetRun(ctx, name); err != nil {
			return false, err
		}
		return false, nil
	}
	return true, nil
}

// DeleteRun removes the run and everything recorded for it. Catalog
// versions registered from it keep its name as lineage.
func (o ops) DeleteRun(ctx context.Context, name string) error {
	_, err := o.DeleteRunIn(ctx, name, nil)
	return err
}

// DeleteRunIn is DeleteRun only while the run's status is one of statuses
// (any when empty), decided by the DELETE itself so that no concurrent
// update slips between the check and the delete. It reports whether it
// deleted; ErrNotFound if the run does not exist. Run it in a transaction
// (Store.InTx) so the run and its records go together.
func (o ops) DeleteRunIn(ctx context.Context, name string, statuses []RunStatus) (bool, error) {
	q, args := "DELETE FROM hone_runs WHERE name = ?", []any{name}
	if len(statuses) > 0 {
		q += " AND status IN (" + strings.TrimSuffix(strings.Repeat("?,", len(statuses)), ",") + ")"
		for _, s := range statuses {
			args = append(args, string(s))
		}
	}
	n, err := o.q.exec(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("store: delete run %s: %w", name, err)
	}
	if n == 0 {
		if _, err := o.GetRun(ctx, name); err != nil {
			return false, err
		}
		return false, nil
	}
	for _, t := range []string{"hone_run_events", "hone_step_metrics", "hone_eval_metrics", "hone_checkpoints", "hone_prompt_outputs",
		"hone_run_ranks", "hone_run_gangs"} {
		if _, err := o.q.exec(ctx, "DELETE FROM "+t+" WHERE run_name = ?", name); err != nil {
			return false, fmt.Errorf("store: delete run %s: %w", name, err)
		}
	}
	return true, nil
}
