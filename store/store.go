// Package store is hone's durable state: runs, their events, metric series,
// checkpoints and eval-prompt outputs, experiments, and the model catalog
// (catalogs, schemas, models, versions, aliases) and serving endpoints. It
// runs on SQLite (modernc.org/sqlite, the embedded default) or PostgreSQL
// (pgx), with the same SQL and the same behaviour on both; store_test's
// conformance suite runs against each.
//
// A *Store is safe for concurrent use. Every method honours ctx
// cancellation. Tx exposes the same operations inside one transaction, and
// its driver-level handle (SQLTx or PgxTx) so a queue can insert a job in
// the same transaction as the row that needs it.
//
// Times are stored as Unix microseconds (UTC); JSON documents as text.
// Missing rows are reported as ErrNotFound, duplicates as ErrExists.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// ErrNotFound is returned when the named row does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating a row whose key is taken.
var ErrExists = errors.New("already exists")

// Dialect names the database behind a Store.
type Dialect string

// The supported dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Config says which database to open.
type Config struct {
	// DSN is a postgres:// or postgresql:// URL for PostgreSQL, or a SQLite
	// file path (optionally prefixed "sqlite:" or "file:").
	DSN string
	// MaxConns caps the PostgreSQL pool; default 10. SQLite always uses one
	// connection (SQLite allows one writer; this avoids SQLITE_BUSY).
	MaxConns int
}

func (c Config) withDefaults() (Config, error) {
	if strings.TrimSpace(c.DSN) == "" {
		return c, errors.New("store: DSN is required")
	}
	if c.MaxConns == 0 {
		c.MaxConns = 10
	}
	if c.MaxConns < 0 {
		return c, fmt.Errorf("store: MaxConns %d must be positive", c.MaxConns)
	}
	return c, nil
}

// DialectOf reports which dialect a DSN selects.
func DialectOf(dsn string) Dialect {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return Postgres
	}
	return SQLite
}

// Store is an open database.
type Store struct {
	ops
	sqlDB *sql.DB
	pool  *pgxpool.Pool
	path  string // SQLite's database file
}

// Tx is one transaction; it has all of Store's operations.
type Tx struct {
	ops
	sqlTx *sql.Tx
	pgxTx pgx.Tx
}

// SQLTx is the database/sql transaction (SQLite), or nil.
func (t *Tx) SQLTx() *sql.Tx { return t.sqlTx }

// PgxTx is the pgx transaction (PostgreSQL), or nil.
func (t *Tx) PgxTx() pgx.Tx { return t.pgxTx }

// Open connects and brings the schema up to date.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Store{}
	switch DialectOf(cfg.DSN) {
	case Postgres:
		pc, err := pgxpool.ParseConfig(cfg.DSN)
		if err != nil {
			return nil, fmt.Errorf("store: parse postgres DSN: %w", err)
		}
		pc.MaxConns = int32(cfg.MaxConns)
		pool, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return nil, fmt.Errorf("store: connect postgres: %w", err)
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return nil, fmt.Errorf("store: connect postgres: %w", err)
		}
		s.pool = pool
		s.ops = ops{q: pgxQuerier{pool}, d: Postgres}
	default:
		path := strings.TrimPrefix(strings.TrimPrefix(cfg.DSN, "sqlite:"), "file:")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(on)&_txlock=immediate"
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
		}
		db.SetMaxOpenConns(1)
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
		}
		s.sqlDB = db
		s.path = path
		s.ops = ops{q: sqlQuerier{db, path}, d: SQLite}
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Dialect reports the database kind.
func (s *Store) Dialect() Dialect { return s.d }

// SQLDB is the database/sql handle (SQLite), or nil.
func (s *Store) SQLDB() *sql.DB { return s.sqlDB }

// PgxPool is the pgx pool (PostgreSQL), or nil.
func (s *Store) PgxPool() *pgxpool.Pool { return s.pool }

// Close releases the connections.
func (s *Store) Close() error {
	if s.pool != nil {
		s.pool.Close()
	}
	if s.sqlDB != nil {
		return s.sqlDB.Close()
	}
	return nil
}

// InTx runs fn in one transaction, committed if fn returns nil and rolled
// back otherwise. On SQLite, fn must not use s itself (one connection).
func (s *Store) InTx(ctx context.Context, fn func(*Tx) error) error {
	if s.pool != nil {
		ptx, err := s.pool.Begin(ctx)
		if err != nil {
			return fmt.Errorf("store: begin: %w", err)
		}
		defer ptx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after commit
		if err := fn(&Tx{ops: ops{q: pgxQuerier{ptx}, d: s.d}, pgxTx: ptx}); err != nil {
			return err
		}
		if err := ptx.Commit(ctx); err != nil {
			return fmt.Errorf("store: commit: %w", noSpace(err, ""))
		}
		return nil
	}
	stx, err := s.sqlDB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer stx.Rollback() //nolint:errcheck // no-op after commit
	if err := fn(&Tx{ops: ops{q: sqlQuerier{stx, s.path}, d: s.d}, sqlTx: stx}); err != nil {
		return err
	}
	if err := stx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", noSpace(err, "the database "+s.path))
	}
	return nil
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// migrationLockKey serialises schema migrations of processes sharing one
// PostgreSQL database (river's included), which would otherwise race when
// `hone serve` and `hone worker` start together.
const migrationLockKey = 7046385

// WithMigrationLock runs fn holding a database-wide lock on PostgreSQL (a
// session advisory lock on a dedicated connection); on SQLite it just runs fn.
func (s *Store) WithMigrationLock(ctx context.Context, fn func() error) error {
	if s.Dialect() != Postgres {
		return fn()
	}
	conn, err := s.PgxPool().Acquire(ctx)
	if err != nil {
		return fmt.Errorf("store: migration lock: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLockKey); err != nil {
		return fmt.Errorf("store: migration lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLockKey)
	return fn()
}

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var err error
	if s.pool != nil {
		err = s.pool.Ping(ctx)
	} else {
		err = s.sqlDB.PingContext(ctx)
	}
	if err != nil {
		return fmt.Errorf("store: ping %s: %w", s.d, err)
	}
	return nil
}
