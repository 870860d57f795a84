package store

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// NoSpaceError is a write the database refused for want of disk space
// (SQLITE_FULL; PostgreSQL's disk_full, SQLSTATE 53100). It matches
// syscall.ENOSPC, so callers treat it as any full disk.
type NoSpaceError struct {
	Where string // the database file, or "the PostgreSQL server's data directory"
	Err   error
}

func (e *NoSpaceError) Error() string {
	return fmt.Sprintf("no space left on device for %s: %v", e.Where, e.Err)
}

func (e *NoSpaceError) Unwrap() []error { return []error{syscall.ENOSPC, e.Err} }

// noSpace wraps err in a NoSpaceError when the database says its disk is
// full; other errors are returned as they are.
func noSpace(err error, where string) error {
	var se *sqlite.Error
	if errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL {
		return &NoSpaceError{Where: where, Err: err}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "53100" {
		return &NoSpaceError{Where: "the PostgreSQL server's data directory", Err: err}
	}
	return err
}
