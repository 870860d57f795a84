package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// schemaV1 is hone's schema; {{ID}} is the dialect's auto-increment key.
// Every statement is idempotent so concurrent first starts are harmless.
var schemaV1 = []string{
	`CREATE TABLE IF NOT EXISTS hone_runs (
		name TEXT PRIMARY KEY,
		user_name TEXT NOT NULL,
		experiment_path TEXT NOT NULL,
		status TEXT NOT NULL,
		params TEXT NOT NULL,
		register_to TEXT NOT NULL,
		job_id BIGINT NOT NULL DEFAULT 0,
		lease_owner TEXT NOT NULL DEFAULT '',
		lease_until BIGINT NOT NULL DEFAULT 0,
		created_at BIGINT NOT NULL,
		started_at BIGINT NOT NULL DEFAULT 0,
		estimated_end_at BIGINT NOT NULL DEFAULT 0,
		completed_at BIGINT NOT NULL DEFAULT 0,
		error TEXT NOT NULL DEFAULT '',
		model_version TEXT NOT NULL DEFAULT ''
	)`,
	`CREATE INDEX IF NOT EXISTS hone_runs_created ON hone_runs (created_at, name)`,
	`CREATE INDEX IF NOT EXISTS hone_runs_experiment ON hone_runs (experiment_path)`,
	`CREATE TABLE IF NOT EXISTS hone_run_events (
		id {{ID}},
		run_name TEXT NOT NULL,
		time BIGINT NOT NULL,
		type TEXT NOT NULL,
		message TEXT NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS hone_run_events_run ON hone_run_events (run_name, id)`,
	`CREATE TABLE IF NOT EXISTS hone_step_metrics (
		run_name TEXT NOT NULL,
		step BIGINT NOT NULL,
		total_steps BIGINT NOT NULL,
		epoch DOUBLE PRECISION NOT NULL,
		loss DOUBLE PRECISION,
		lr DOUBLE PRECISION NOT NULL,
		grad_norm DOUBLE PRECISION,
		tokens_per_sec DOUBLE PRECISION NOT NULL,
		tokens_seen BIGINT NOT NULL,
		elapsed_us BIGINT NOT NULL,
		time BIGINT NOT NULL,
		PRIMARY KEY (run_name, step)
	)`,
	`CREATE TABLE IF NOT EXISTS hone_eval_metrics (
		run_name TEXT NOT NULL,
		step BIGINT NOT NULL,
		loss DOUBLE PRECISION,
		perplexity DOUBLE PRECISION,
		token_accuracy DOUBLE PRECISION,
		time BIGINT NOT NULL,
		PRIMARY KEY (run_name, step)
	)`,
	`CREATE TABLE IF NOT EXISTS hone_checkpoints (
		run_name TEXT NOT NULL,
		step BIGINT NOT NULL,
		epoch DOUBLE PRECISION NOT NULL,
		dir TEXT NOT NULL,
		time BIGINT NOT NULL,
		PRIMARY KEY (run_name, step)
	)`,
	`CREATE TABLE IF NOT EXISTS hone_prompt_outputs (
		run_name TEXT NOT NULL,
		step BIGINT NOT NULL,
		idx BIGINT NOT NULL,
		prompt TEXT NOT NULL,
		output TEXT NOT NULL,
		time BIGINT NOT NULL,
		PRIMARY KEY (run_name, step, idx)
	)`,
	`CREATE TABLE IF NOT EXISTS hone_experiments (
		path TEXT PRIMARY KEY,
		user_name TEXT NOT NULL,
		created_at BIGINT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS hone_catalogs (
		name TEXT PRIMARY KEY,
		comment TEXT NOT NULL,
		created_at BIGINT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS hone_schemas (
		catalog TEXT NOT NULL,
		name TEXT NOT NULL,
		comment TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		PRIMARY KEY (catalog, name)
	)`,
	`CREATE TABLE IF NOT EXISTS hone_models (
		catalog TEXT NOT NULL,
		schema_name TEXT NOT NULL,
		name TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		PRIMARY KEY (catalog, schema_name, name)
	)`,
	`CREATE TABLE IF NOT EXISTS hone_model_versions (
		catalog TEXT NOT NULL,
		schema_name TEXT NOT NULL,
		model TEXT NOT NULL,
		version BIGINT NOT NULL,
		storage_location TEXT NOT NULL,
		run_name TEXT NOT NULL,
		base_model TEXT NOT NULL,
		data_fingerprint TEXT NOT NULL,
		metrics TEXT NOT NULL,
		license TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		PRIMARY KEY (catalog, schema_name, model, version)
	)`,
	`CREATE TABLE IF NOT EXISTS hone_model_aliases (
		catalog TEXT NOT NULL,
		schema_name TEXT NOT NULL,
		model TEXT NOT NULL,
		alias TEXT NOT NULL,
		version BIGINT NOT NULL,
		PRIMARY KEY (catalog, schema_name, model, alias)
	)`,
}

// schemaV2 adds serving endpoints: a name that serves a model reference
// (a version or an alias), resolved again for every request.
var schemaV2 = []string{
	`CREATE TABLE IF NOT EXISTS hone_endpoints (
		name TEXT PRIMARY KEY,
		model TEXT NOT NULL,
		created_at BIGINT NOT NULL
	)`,
}

// schemaV3 makes tracking survive the database and fences stale workers:
// hone_runs.lease_epoch (added by addColumns) counts the claims of a run, and
// an event delivered from a worker's journal carries a key, so one delivered
// twice is stored once.
var schemaV3 = []string{
	`CREATE UNIQUE INDEX IF NOT EXISTS hone_run_events_key ON hone_run_events (run_name, journal_key)`,
}

// addedColumns are columns added to tables of an earlier schema; each is
// added once (SQLite has no ADD COLUMN IF NOT EXISTS), after its table's
// migration and before migration before (its index in migrations).
var addedColumns = []struct {
	table, column, decl string
	before              int
}{
	{"hone_runs", "lease_epoch", "BIGINT NOT NULL DEFAULT 0", 2},
	{"hone_run_events", "journal_key", "TEXT", 2},
	{"hone_workers", "slots", "BIGINT NOT NULL DEFAULT 1", len(migrations)},
}

// migrations are applied in order, all of them at every start.
var migrations = [][]string{schemaV1, schemaV2, schemaV3, schemaSweeps, schemaGang} // schemaSweeps: sweeps.go; schemaGang: gang.go

// migrate applies the schema. On PostgreSQL, its IF NOT EXISTS statements
// still lock the tables they name, so a process starting while others
// write runs can deadlock with them; PostgreSQL then aborts one side, and
// a migration it aborted is tried again.
func (s *Store) migrate(ctx context.Context) error {
	for try := 1; ; try++ {
		err := s.migrateOnce(ctx)
		if err == nil || try == 5 || !strings.Contains(err.Error(), "SQLSTATE 40P01") {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(try) * 100 * time.Millisecond):
		}
	}
}

func (s *Store) migrateOnce(ctx context.Context) error {
	id := "INTEGER PRIMARY KEY AUTOINCREMENT"
	if s.d == Postgres {
		id = "BIGSERIAL PRIMARY KEY"
	}
	return s.InTx(ctx, func(tx *Tx) error {
		if s.d == Postgres {
			// Serialise concurrent first starts of several processes.
			if _, err := tx.q.exec(ctx, "SELECT pg_advisory_xact_lock(7046384)"); err != nil {
				return fmt.Errorf("store: migrate lock: %w", err)
			}
		}
		for i, schema := range migrations {
			if err := addColumns(ctx, tx, i); err != nil {
				return err
			}
			for _, stmt := range schema {
				if _, err := tx.q.exec(ctx, strings.ReplaceAll(stmt, "{{ID}}", id)); err != nil {
					return fmt.Errorf("store: migrate: %w\n%s", err, stmt)
				}
			}
		}
		return addColumns(ctx, tx, len(migrations))
	})
}

// addColumns adds the columns due before migration i.
func addColumns(ctx context.Context, tx *Tx, i int) error {
	for _, c := range addedColumns {
		if c.before != i {
			continue
		}
		if tx.d == Postgres {
			if _, err := tx.q.exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s", c.table, c.column, c.decl)); err != nil {
				return fmt.Errorf("store: migrate: add %s.%s: %w", c.table, c.column, err)
			}
			continue
		}
		var n int
		if err := tx.one(ctx, `SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?`, []any{c.table, c.column}, &n); err != nil {
			return fmt.Errorf("store: migrate: inspect %s: %w", c.table, err)
		}
		if n == 0 {
			if _, err := tx.q.exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", c.table, c.column, c.decl)); err != nil {
				return fmt.Errorf("store: migrate: add %s.%s: %w", c.table, c.column, err)
			}
		}
	}
	return nil
}
