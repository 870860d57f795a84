package store

import (
	"context"
	"database/sql"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// querier is the little of database/sql and pgx that ops needs. Queries are
// written with ? placeholders; the Postgres side rewrites them to $n.
type querier interface {
	exec(ctx context.Context, q string, args ...any) (int64, error)
	query(ctx context.Context, q string, args ...any) (rows, error)
}

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

type sqlConn interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

// sqlQuerier is SQLite's; path names the database file in errors.
type sqlQuerier struct {
	c    sqlConn
	path string
}

func (s sqlQuerier) exec(ctx context.Context, q string, args ...any) (int64, error) {
	r, err := s.c.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, noSpace(err, "the database "+s.path)
	}
	return r.RowsAffected()
}

func (s sqlQuerier) query(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := s.c.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, noSpace(err, "the database "+s.path)
	}
	return sqlRows{r}, nil
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { r.Rows.Close() }

type pgxConn interface {
	Exec(ctx context.Context, q string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, q string, args ...any) (pgx.Rows, error)
}

type pgxQuerier struct{ c pgxConn }

func (p pgxQuerier) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := p.c.Exec(ctx, dollar(q), args...)
	if err != nil {
		return 0, noSpace(err, "")
	}
	return tag.RowsAffected(), nil
}

func (p pgxQuerier) query(ctx context.Context, q string, args ...any) (rows, error) {
	r, err := p.c.Query(ctx, dollar(q), args...)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// dollar rewrites ? placeholders to $1, $2, ... (hone's SQL has no literal ?).
func dollar(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ops holds the operations shared by Store and Tx.
type ops struct {
	q querier
	d Dialect
}

// one runs a query expected to return at most one row and scans it;
// ErrNotFound when there is none.
func (o ops) one(ctx context.Context, q string, args []any, dest ...any) error {
	r, err := o.q.query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer r.Close()
	if !r.Next() {
		if err := r.Err(); err != nil {
			return err
		}
		return ErrNotFound
	}
	if err := r.Scan(dest...); err != nil {
		return err
	}
	return r.Err()
}

// all runs a query and calls scan for each row.
func (o ops) all(ctx context.Context, q string, args []any, scan func(rows) error) error {
	r, err := o.q.query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer r.Close()
	for r.Next() {
		if err := scan(r); err != nil {
			return err
		}
	}
	return r.Err()
}
