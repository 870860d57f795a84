// Package storetest opens throw-away stores for tests: a SQLite file in a
// temporary directory, and a fresh schema in the PostgreSQL database named by
// HONE_TEST_PG_DSN. A missing HONE_TEST_PG_DSN fails the test (in CI and
// locally alike): run scripts/postgres.sh and export its output.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"hone/store"
)

// Backend opens a fresh, empty store; its DSN is the value to hand a
// separate process (hone serve --db) for the same database.
type Backend struct {
	Name string
	Open func(t testing.TB) (*store.Store, string)
}

// Backends returns SQLite and PostgreSQL.
func Backends(t testing.TB) []Backend {
	return []Backend{{Name: "sqlite", Open: OpenSQLite}, {Name: "postgres", Open: OpenPostgres}}
}

// Each runs fn as a subtest once per backend.
func Each(t *testing.T, fn func(t *testing.T, s *store.Store, dsn string)) {
	for _, b := range Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			s, dsn := b.Open(t)
			fn(t, s, dsn)
		})
	}
}

// OpenSQLite opens a store in a new temporary file.
func OpenSQLite(t testing.TB) (*store.Store, string) {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "hone.db")
	s, err := store.Open(context.Background(), store.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dsn
}

// PostgresDSN returns HONE_TEST_PG_DSN, failing the test if it is unset.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("HONE_TEST_PG_DSN")
	if dsn == "" {
		t.Fatal("HONE_TEST_PG_DSN is unset: run scripts/postgres.sh and export HONE_TEST_PG_DSN to its output")
	}
	return dsn
}

// OpenPostgres creates a new schema, opens a store whose search_path is
// that schema, and drops the schema when the test ends.
func OpenPostgres(t testing.TB) (*store.Store, string) {
	t.Helper()
	base := PostgresDSN(t)
	ctx := context.Background()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "hone_test_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect %s: %v", redact(base), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			t.Logf("drop schema %s: %v", schema, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Logf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	dsn := u.String()
	s, err := store.Open(ctx, store.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dsn
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}
