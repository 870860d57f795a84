package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"hone/store"
	"hone/store/storetest"
)

// fillSQLite caps st's SQLite file at its current size, so that writes
// needing a new page fail as on a full disk (SQLITE_FULL).
func fillSQLite(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	var pages int
	if err := st.SQLDB().QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := st.SQLDB().ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages)); err != nil {
		t.Fatal(err)
	}
}

// A database whose disk is full says so: the error matches syscall.ENOSPC
// and names the database file.
func TestDatabaseFullIsNoSpace(t *testing.T) {
	st, path := storetest.OpenSQLite(t)
	fillSQLite(t, st)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		err = st.AddEvent(context.Background(), "r", store.Event{Time: time.Now(), Type: "LOG", Message: strings.Repeat("x", 4000)})
	}
	var ne *store.NoSpaceError
	if !errors.Is(err, syscall.ENOSPC) || !errors.As(err, &ne) || !strings.Contains(ne.Where, path) {
		t.Fatalf("write to a full database = %v; want a NoSpaceError (ENOSPC) naming %s", err, path)
	}
}
