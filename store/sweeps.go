package store

import (
	"context"
	"fmt"
	"time"
)

// schemaSweeps adds sweeps: a grid of runs created together, in one
// experiment. hone_sweep_runs keeps each run's place in the grid.
var schemaSweeps = []string{
	`CREATE TABLE IF NOT EXISTS hone_sweeps (
		name TEXT PRIMARY KEY,
		user_name TEXT NOT NULL,
		experiment_path TEXT NOT NULL,
		params TEXT NOT NULL,
		created_at BIGINT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS hone_sweeps_created ON hone_sweeps (created_at, name)`,
	`CREATE TABLE IF NOT EXISTS hone_sweep_runs (
		sweep_name TEXT NOT NULL,
		idx BIGINT NOT NULL,
		run_name TEXT NOT NULL,
		PRIMARY KEY (sweep_name, idx)
	)`,
}

// Sweep is a grid of runs. Params is the service's JSON (the request and
// the grid); Runs are the run names in grid order.
type Sweep struct {
	Name           string
	User           string
	ExperimentPath string
	Params         string
	CreatedAt      time.Time
	Runs           []string
}

// InsertSweep stores a sweep and its runs' places; the runs themselves are
// inserted by the caller, in the same transaction. ErrExists if the name
// is taken.
func (o ops) InsertSweep(ctx context.Context, sw *Sweep) error {
	n, err := o.q.exec(ctx, `INSERT INTO hone_sweeps (name, user_name, experiment_path, params, created_at) VALUES (?,?,?,?,?)
		ON CONFLICT (name) DO NOTHING`, sw.Name, sw.User, sw.ExperimentPath, sw.Params, micros(sw.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: insert sweep %s: %w", sw.Name, err)
	}
	if n == 0 {
		return fmt.Errorf("sweep %s: %w", sw.Name, ErrExists)
	}
	for i, r := range sw.Runs {
		if _, err := o.q.exec(ctx, `INSERT INTO hone_sweep_runs (sweep_name, idx, run_name) VALUES (?,?,?)`, sw.Name, i, r); err != nil {
			return fmt.Errorf("store: insert sweep %s run %s: %w", sw.Name, r, err)
		}
	}
	return nil
}

// GetSweep reads a sweep and its run names in grid order.
func (o ops) GetSweep(ctx context.Context, name string) (*Sweep, error) {
	sw := Sweep{Name: name}
	var t int64
	if err := o.one(ctx, `SELECT user_name, experiment_path, params, created_at FROM hone_sweeps WHERE name = ?`, []any{name},
		&sw.User, &sw.ExperimentPath, &sw.Params, &t); err != nil {
		return nil, fmt.Errorf("sweep %s: %w", name, err)
	}
	sw.CreatedAt = fromMicros(t)
	r, err := o.q.query(ctx, `SELECT run_name FROM hone_sweep_runs WHERE sweep_name = ? ORDER BY idx`, name)
	if err != nil {
		return nil, fmt.Errorf("store: sweep %s runs: %w", name, err)
	}
	defer r.Close()
	for r.Next() {
		var run string
		if err := r.Scan(&run); err != nil {
			return nil, fmt.Errorf("store: sweep %s runs: %w", name, err)
		}
		sw.Runs = append(sw.Runs, run)
	}
	return &sw, r.Err()
}

// ListSweeps returns the names of up to limit sweeps, newest first, of one
// user (all users when user is "").
func (o ops) ListSweeps(ctx context.Context, user string, limit int) ([]string, error) {
	q, args := `SELECT name FROM hone_sweeps ORDER BY created_at DESC, name DESC LIMIT ?`, []any{limit}
	if user != "" {
		q, args = `SELECT name FROM hone_sweeps WHERE user_name = ? ORDER BY created_at DESC, name DESC LIMIT ?`, []any{user, limit}
	}
	r, err := o.q.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list sweeps: %w", err)
	}
	defer r.Close()
	var out []string
	for r.Next() {
		var n string
		if err := r.Scan(&n); err != nil {
			return nil, fmt.Errorf("store: list sweeps: %w", err)
		}
		out = append(out, n)
	}
	return out, r.Err()
}
