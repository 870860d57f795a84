package tabular

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/internal/testassets"
)

// rows scans t and returns every row's JSON (or "!field: message" for a
// value error), with the location of each.
func rows(t *testing.T, tab *Table, want ...string) ([]string, []Loc) {
	t.Helper()
	var out []string
	var locs []Loc
	err := tab.Scan(context.Background(), want, func(string, []string) (bool, error) { return true, nil },
		func(loc Loc, obj []byte, verr *ValueError) error {
			if verr != nil {
				out = append(out, "!"+verr.Error())
			} else {
				out = append(out, string(obj))
			}
			locs = append(locs, loc)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return out, locs
}

func open(t *testing.T, path string, opt Options) *Table {
	t.Helper()
	tab, err := Open(context.Background(), path, opt)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return tab
}

// TestDeltaRows reads the live rows of delta-rs's test tables: the values
// were checked with DuckDB on the live files.
func TestDeltaRows(t *testing.T) {
	latest := Options{Version: -1}
	got, _ := rows(t, open(t, testassets.SharedDelta(t, "simple_table"), latest), "id")
	if want := []string{`{"id":5}`, `{"id":7}`, `{"id":9}`}; !slices.Equal(got, want) {
		t.Errorf("simple_table rows %v, want %v", got, want)
	}
	got, _ = rows(t, open(t, testassets.SharedDelta(t, "delta-0.8.0-special-partition"), latest), "x", "y")
	if want := []string{`{"x":"A/A","y":1}`, `{"x":"B B","y":2}`}; !slices.Equal(got, want) {
		t.Errorf("special-partition rows %v, want %v", got, want)
	}
	got, _ = rows(t, open(t, testassets.SharedDelta(t, "delta-0.8.0-null-partition"), latest), "k", "v")
	if want := []string{`{"k":"A","v":1}`, `{"v":2}`}; !slices.Equal(got, want) {
		t.Errorf("null-partition rows %v, want %v", got, want)
	}
	got, _ = rows(t, open(t, testassets.SharedDelta(t, "table_with_column_mapping"), latest), "Super Name", "Company Very Short")
	want := []string{
		`{"Company Very Short":"BME","Super Name":"Timothy Lamb"}`,
		`{"Company Very Short":"BMS","Super Name":"Mr. Daniel Ferguson MD"}`,
		`{"Company Very Short":"BMS","Super Name":"Stephanie Mcgrath"}`,
		`{"Company Very Short":"BMS","Super Name":"Anthony Johnson"}`,
		`{"Company Very Short":"BMS","Super Name":"Nathan Bennett"}`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("column-mapping rows %v, want %v", got, want)
	}
	got, _ = rows(t, open(t, testassets.SharedDelta(t, "simple_table_with_checkpoint"), latest), "version")
	if len(got) != 11 {
		t.Errorf("checkpoint table: %d rows, want 11", len(got))
	}
}

// TestRowGroups streams a DuckDB file of several row groups and reports
// each row's row group and row, and a string that is not UTF-8 by field.
func TestRowGroups(t *testing.T) {
	dir := t.TempDir()
	testassets.DuckDB(t, dir,
		`COPY (SELECT i AS id, 'doc ' || i AS text, [{'role': 'user', 'content': 'q' || i}] AS messages
		       FROM range(5000) t(i)) TO 'big.parquet' (FORMAT parquet, ROW_GROUP_SIZE 2048)`,
		`COPY (SELECT 'ok' AS text UNION ALL SELECT '\xff'::BLOB AS text) TO 'bin.parquet' (FORMAT parquet)`)
	got, locs := rows(t, open(t, filepath.Join(dir, "big.parquet"), Options{}), "text", "messages")
	if len(got) != 5000 {
		t.Fatalf("%d rows, want 5000", len(got))
	}
	if got[4999] != `{"messages":[{"content":"q4999","role":"user"}],"text":"doc 4999"}` {
		t.Errorf("last row %s", got[4999])
	}
	if l := locs[4999]; l.RowGroup < 2 || l.Row != 5000 {
		t.Errorf("last row at %+v, want row 5000 in a later row group", l)
	}
	if l := locs[2048]; l.RowGroup != 2 || l.Row != 2049 {
		t.Errorf("row 2049 at %+v, want row group 2", l)
	}
	got, _ = rows(t, open(t, filepath.Join(dir, "bin.parquet"), Options{}), "text")
	if len(got) != 2 || got[0] != `{"text":"ok"}` || got[1] != "!text: not valid UTF-8" {
		t.Errorf("binary rows %q", got)
	}
}

// TestHuggingFace lays out a dataset as the hub does and reads splits.
func TestHuggingFace(t *testing.T) {
	root := t.TempDir()
	ds := filepath.Join(root, "ds")
	for _, d := range []string{"data", "cfg/other/train"} {
		if err := os.MkdirAll(filepath.Join(ds, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ds, "README.md"), []byte("---\nlicense: mit\n---\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testassets.DuckDB(t, ds,
		`COPY (SELECT 'train a' AS text) TO 'data/train-00000-of-00002.parquet' (FORMAT parquet)`,
		`COPY (SELECT 'train b' AS text) TO 'data/train-00001-of-00002.parquet' (FORMAT parquet)`,
		`COPY (SELECT 'test a' AS text) TO 'data/test-00000-of-00001.parquet' (FORMAT parquet)`)
	tab := open(t, ds, Options{})
	if got, _ := rows(t, tab, "text"); tab.Kind != KindHuggingFace || !slices.Equal(got, []string{`{"text":"train a"}`, `{"text":"train b"}`}) {
		t.Errorf("train split: %s %v", tab.Kind, got)
	}
	if got, _ := rows(t, open(t, ds, Options{Split: "validation,test"}), "text"); !slices.Equal(got, []string{`{"text":"test a"}`}) {
		t.Errorf("test split: %v", got)
	}
	if _, err := Open(context.Background(), ds, Options{Split: "dev"}); err == nil || !strings.Contains(err.Error(), "test, train") {
		t.Errorf("unknown split: %v, want the splits listed", err)
	}
	// The same folder in the hub cache, by id.
	home := filepath.Join(root, "hf")
	repo := filepath.Join(home, "hub", "datasets--org--name")
	if err := os.MkdirAll(filepath.Join(repo, "snapshots"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(repo, "refs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(ds, filepath.Join(repo, "snapshots", "abc123")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte("abc123\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !Detect("org/name", Options{HFHome: home}) {
		t.Fatal("Detect(org/name) = false with the dataset cached")
	}
	if got, _ := rows(t, open(t, "org/name", Options{HFHome: home}), "text"); len(got) != 2 {
		t.Errorf("cached dataset rows %v", got)
	}
	if _, err := Open(context.Background(), "org/missing", Options{HFHome: home}); err == nil || !strings.Contains(err.Error(), "huggingface-cli download") {
		t.Errorf("uncached id: %v", err)
	}
}

// TestConfigSplits reads the <config>/<split>/ layout.
func TestConfigSplits(t *testing.T) {
	ds := t.TempDir()
	for _, d := range []string{"default/train", "extra/train"} {
		if err := os.MkdirAll(filepath.Join(ds, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testassets.DuckDB(t, ds,
		`COPY (SELECT 'default' AS text) TO 'default/train/0000.parquet' (FORMAT parquet)`,
		`COPY (SELECT 'extra' AS text) TO 'extra/train/0000.parquet' (FORMAT parquet)`)
	for split, want := range map[string]string{"train": "default", "extra/train": "extra"} {
		got, _ := rows(t, open(t, ds, Options{Split: split}), "text")
		if !slices.Equal(got, []string{fmt.Sprintf(`{"text":%q}`, want)}) {
			t.Errorf("split %s: %v", split, got)
		}
	}
}

func TestMalformedParquet(t *testing.T) {
	f := filepath.Join(t.TempDir(), "bad.parquet")
	if err := os.WriteFile(f, []byte("PAR1 not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := open(t, f, Options{}).Scan(context.Background(), []string{"text"}, func(string, []string) (bool, error) { return true, nil },
		func(Loc, []byte, *ValueError) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "bad.parquet") {
		t.Fatalf("Scan = %v, want an error naming the file", err)
	}
}
