package testassets

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// DuckDB runs SQL statements with DuckDB (the @duckdb/node-api package
// that scripts/test-assets.sh fetches, under node) in dir, one thread so
// rows keep their input order. Tests use it to write Parquet files with a
// real third-party writer.
func DuckDB(t testing.TB, dir string, sql ...string) {
	t.Helper()
	modules := Path(t, "duckdb/node_modules")
	script := filepath.Join(Root(t), "internal", "testassets", "duckdb.cjs")
	cmd := exec.Command("node", append([]string{script, modules}, sql...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("duckdb: %v: %s", err, out)
	}
}

// SharedDelta returns the path of a real Delta table from ../shared/data/delta
// beside the repository (delta-rs's test tables, see its README), skipping
// the test with a message when that folder is absent.
func SharedDelta(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(Root(t), "..", "shared", "data", "delta", name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared Delta table %s absent (%v): these tests need ../shared/data/delta beside the clone", name, err)
	}
	return p
}
