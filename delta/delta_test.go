package delta

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/internal/testassets"
)

func load(t *testing.T, dir string, version int64) *Snapshot {
	t.Helper()
	s, err := Load(context.Background(), dir, version)
	if err != nil {
		t.Fatalf("Load(%s, %d): %v", dir, version, err)
	}
	return s
}

func names(s *Snapshot) []string {
	var out []string
	for _, f := range s.Files {
		rel, _ := filepath.Rel(s.Dir, f.Path)
		out = append(out, filepath.ToSlash(rel))
	}
	return out
}

// TestSimpleTable replays adds and removes over five commits (written by
// Spark); the live files at each version are those delta-rs's own tests
// list for this table.
func TestSimpleTable(t *testing.T) {
	dir := testassets.SharedDelta(t, "simple_table")
	s := load(t, dir, -1)
	want := []string{
		"part-00000-2befed33-c358-4768-a43c-3eda0d2a499d-c000.snappy.parquet",
		"part-00000-c1777d7d-89d9-4790-b38a-6ee7e24456b1-c000.snappy.parquet",
		"part-00001-7891c33d-cedc-47c3-88a6-abcfb049d3b4-c000.snappy.parquet",
		"part-00004-315835fe-fb44-4562-98f6-5e6cfa3ae45d-c000.snappy.parquet",
		"part-00007-3a0e4727-de0d-41b6-81ef-5223cf40f025-c000.snappy.parquet",
	}
	if s.Version != 4 || !slices.Equal(names(s), want) {
		t.Fatalf("latest: version %d files %v, want 4 %v", s.Version, names(s), want)
	}
	// Version 0 is the first write: 6 adds, none of which survive.
	s0 := load(t, dir, 0)
	if s0.Version != 0 || len(s0.Files) != 6 {
		t.Fatalf("version 0: %d files (%v)", len(s0.Files), names(s0))
	}
	for _, n := range names(s0) {
		if slices.Contains(want, n) {
			t.Errorf("version 0 file %s is still live at version 4, but commit 1 overwrote the table", n)
		}
	}
	if _, err := Load(context.Background(), dir, 5); err == nil || !strings.Contains(err.Error(), "latest is 4") {
		t.Errorf("Load(version 5) = %v, want an error naming the latest version", err)
	}
}

// TestCheckpoint reads through the checkpoint Parquet file at version 10
// and time-travels to a version before it.
func TestCheckpoint(t *testing.T) {
	dir := testassets.SharedDelta(t, "simple_table_with_checkpoint")
	if s := load(t, dir, -1); s.Version != 10 || len(s.Files) != 11 {
		t.Fatalf("latest: version %d, %d files; want 10 and 11", s.Version, len(s.Files))
	}
	if s := load(t, dir, 9); s.Version != 9 || len(s.Files) != 10 {
		t.Fatalf("version 9: %d files; want 10", len(s.Files))
	}
	// Without the commits before the checkpoint, the latest version is
	// still readable; version 9 no longer is.
	cp := t.TempDir()
	copyTree(t, dir, cp)
	for v := range 10 {
		os.Remove(filepath.Join(cp, "_delta_log", fmt.Sprintf("%020d.json", v)))
	}
	if s := load(t, cp, -1); len(s.Files) != 11 {
		t.Fatalf("from the checkpoint alone: %d files; want 11", len(s.Files))
	}
	if _, err := Load(context.Background(), cp, 9); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("version 9 without its commits: %v, want a missing-commit error", err)
	}
}

func TestPartitionValues(t *testing.T) {
	s := load(t, testassets.SharedDelta(t, "delta-0.8.0-special-partition"), -1)
	var got []string
	for _, f := range s.Files {
		if _, err := os.Stat(f.Path); err != nil {
			t.Errorf("URL-encoded path not decoded: %v", err)
		}
		got = append(got, *f.Partition["x"])
	}
	if !slices.Equal(got, []string{"A/A", "B B"}) {
		t.Errorf("partition values %q, want A/A and B B", got)
	}
	s = load(t, testassets.SharedDelta(t, "delta-0.8.0-null-partition"), -1)
	if len(s.Files) != 2 || s.Files[0].Partition["k"] == nil || s.Files[1].Partition["k"] != nil {
		t.Errorf("null partition: %+v", s.Files)
	}
}

func TestColumnMapping(t *testing.T) {
	s := load(t, testassets.SharedDelta(t, "table_with_column_mapping"), -1)
	if len(s.Fields) != 2 || s.Fields[1].Name != "Super Name" || s.Fields[1].Physical != "col-3877fd94-0973-4941-ac6b-646849a1ff65" {
		t.Fatalf("fields %+v", s.Fields)
	}
	// The log keys partition values by physical name; Files use the
	// logical one.
	if v := s.Files[0].Partition["Company Very Short"]; v == nil || *v != "BME" {
		t.Fatalf("partition %v", s.Files[0].Partition)
	}
}

func TestDeletionVectorsRefused(t *testing.T) {
	_, err := Load(context.Background(), testassets.SharedDelta(t, "table-with-dv-small"), -1)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `"deletionVectors"`) {
		t.Fatalf("Load = %v, want ErrUnsupported naming deletionVectors", err)
	}
	// Version 0, before the delete, has the feature too: still refused.
	if _, err := Load(context.Background(), testassets.SharedDelta(t, "table-with-dv-small"), 0); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Load(0) = %v", err)
	}
}

// writeLog makes a table whose log is the given commits (one JSON action
// a line) and whose data files are empty placeholders.
func writeLog(t *testing.T, commits ...string) string {
	t.Helper()
	dir := t.TempDir()
	writeLogIn(t, dir, commits...)
	return dir
}

func writeLogIn(t *testing.T, dir string, commits ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "_delta_log"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, c := range commits {
		name := filepath.Join(dir, "_delta_log", fmt.Sprintf("%020d.json", i))
		if err := os.WriteFile(name, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const meta = `{"metaData":{"schemaString":"{\"type\":\"struct\",\"fields\":[{\"name\":\"text\",\"type\":\"string\",\"nullable\":true,\"metadata\":{}}]}","partitionColumns":[],"configuration":{}}}`

func TestProtocolRefused(t *testing.T) {
	dir := writeLog(t, `{"protocol":{"minReaderVersion":4,"minWriterVersion":7}}`+"\n"+meta)
	if _, err := Load(context.Background(), dir, -1); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "reader version 4") {
		t.Fatalf("Load = %v, want the reader version named", err)
	}
}

// TestPathsConfined: a log cannot make the reader open files outside the
// table folder, by "..", an absolute URI or a symlink.
func TestPathsConfined(t *testing.T) {
	parent := t.TempDir()
	outside := filepath.Join(parent, "secret.parquet")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	proto := `{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}` + "\n" + meta + "\n"
	for i, p := range []string{"../secret.parquet", "..%2Fsecret.parquet", "file://" + outside, "link.parquet"} {
		dir := filepath.Join(parent, fmt.Sprintf("table%d", i))
		writeLogIn(t, dir, proto+`{"add":{"path":"`+p+`","partitionValues":{},"size":1,"modificationTime":0,"dataChange":true}}`)
		if err := os.Symlink(outside, filepath.Join(dir, "link.parquet")); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(context.Background(), dir, -1); err == nil || !strings.Contains(err.Error(), "outside the table folder") {
			t.Errorf("path %s: Load = %v, want a refusal", p, err)
		}
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointPartitionValues reads a checkpoint whose add actions carry
// partition values (a Parquet MAP), written by DuckDB in the checkpoint
// schema, followed by a commit that removes one of the files.
func TestCheckpointPartitionValues(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"_delta_log", "x=A", "x=B%20B"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"x=A/a.parquet", "x=B%20B/b.parquet", "x=A/c.parquet"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	schema := strings.ReplaceAll(`{"type":"struct","fields":[{"name":"x","type":"string","nullable":true,"metadata":{}},{"name":"text","type":"string","nullable":true,"metadata":{}}]}`, "'", "''")
	add := func(path, x string) string {
		return fmt.Sprintf(`NULL, {'path': '%s', 'partitionValues': MAP {'x': '%s'}, 'size': 4::BIGINT, 'modificationTime': 0::BIGINT, 'dataChange': false}`, path, x)
	}
	const none = `NULL::STRUCT(minReaderVersion INTEGER, minWriterVersion INTEGER), NULL::STRUCT(id VARCHAR, schemaString VARCHAR, partitionColumns VARCHAR[])`
	testassets.DuckDB(t, filepath.Join(dir, "_delta_log"), `COPY (
		SELECT NULL::STRUCT(path VARCHAR) AS remove, NULL::STRUCT(path VARCHAR, partitionValues MAP(VARCHAR, VARCHAR), size BIGINT, modificationTime BIGINT, dataChange BOOLEAN) AS add,
		       {'minReaderVersion': 1, 'minWriterVersion': 2} AS protocol, NULL::STRUCT(id VARCHAR, schemaString VARCHAR, partitionColumns VARCHAR[]) AS metaData
		UNION ALL SELECT NULL, NULL, NULL, {'id': 't', 'schemaString': '`+schema+`', 'partitionColumns': ['x']}
		UNION ALL SELECT `+add("x=A/a.parquet", "A")+`, `+none+`
		UNION ALL SELECT `+add("x=B%2520B/b.parquet", "B B")+`, `+none+`
		) TO '00000000000000000003.checkpoint.parquet' (FORMAT parquet)`)
	writeLogIn(t, dir) // the folder exists; commits are added below
	for v, c := range map[int]string{4: `{"remove":{"path":"x=A/a.parquet","dataChange":true}}` + "\n" +
		`{"add":{"path":"x=A/c.parquet","partitionValues":{"x":"A"},"size":4,"modificationTime":0,"dataChange":true}}`} {
		if err := os.WriteFile(filepath.Join(dir, "_delta_log", fmt.Sprintf("%020d.json", v)), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := load(t, dir, -1)
	got := names(s)
	if s.Version != 4 || strings.Join(got, " ") != "x=A/c.parquet x=B%20B/b.parquet" {
		t.Fatalf("version %d files %v", s.Version, got)
	}
	if v := s.Files[1].Partition["x"]; v == nil || *v != "B B" {
		t.Fatalf("partition values from the checkpoint: %q", deref(s.Files[1].Partition))
	}
	if s3 := load(t, dir, 3); len(s3.Files) != 2 || *s3.Files[0].Partition["x"] != "A" {
		t.Fatalf("version 3 (the checkpoint alone): %v", names(s3))
	}
}

func deref(m map[string]*string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if v == nil {
			out[k] = "<null>"
		} else {
			out[k] = *v
		}
	}
	return out
}
