package dataset

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/internal/testassets"
)

// previewOutput is what `hone data preview --limit 0` prints for path: the
// examples as JSON lines, then the problems.
func previewOutput(t *testing.T, mdir string, task Task, path string, opt Options) string {
	t.Helper()
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	var probs []string
	err := Preview(context.Background(), mdir, task, path, opt, 0,
		func(ex Example) error { return enc.Encode(ex) },
		func(p Problem) { probs = append(probs, p.String()) })
	if err != nil {
		t.Fatalf("Preview(%s): %v", path, err)
	}
	w.Flush()
	return buf.String() + strings.Join(probs, "\n")
}

// deltaLog writes a Delta log over Parquet files that DuckDB wrote:
// version 0 adds the files of first, version 1 removes those of removed
// and adds those of then. Paths are URL-encoded as writers do.
func deltaLog(t *testing.T, dir string, first, removed, then []string) {
	t.Helper()
	schema := `{"type":"struct","fields":[{"name":"messages","type":{"type":"array","elementType":{"type":"struct","fields":[{"name":"role","type":"string","nullable":true,"metadata":{}},{"name":"content","type":"string","nullable":true,"metadata":{}}]},"containsNull":true},"nullable":true,"metadata":{}}]}`
	meta, _ := json.Marshal(map[string]any{"metaData": map[string]any{"id": "t", "format": map[string]any{"provider": "parquet"},
		"schemaString": schema, "partitionColumns": []string{}, "configuration": map[string]string{}}})
	add := func(p string) string {
		return fmt.Sprintf(`{"add":{"path":%q,"partitionValues":{},"size":1,"modificationTime":0,"dataChange":true}}`, strings.ReplaceAll(p, " ", "%20"))
	}
	v0 := []string{`{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}`, string(meta)}
	for _, p := range first {
		v0 = append(v0, add(p))
	}
	var v1 []string
	for _, p := range removed {
		v1 = append(v1, fmt.Sprintf(`{"remove":{"path":%q,"dataChange":true}}`, strings.ReplaceAll(p, " ", "%20")))
	}
	for _, p := range then {
		v1 = append(v1, add(p))
	}
	if err := os.MkdirAll(filepath.Join(dir, "_delta_log"), 0o755); err != nil {
		t.Fatal(err)
	}
	for v, lines := range [][]string{v0, v1} {
		writeFile(t, filepath.Join(dir, "_delta_log"), fmt.Sprintf("%020d.json", v), strings.Join(lines, "\n")+"\n")
	}
}

// TestTablePreviewMatchesJSONL: the same chat records as JSONL, as a
// Parquet file, a folder of Parquet files, a Hugging Face dataset folder
// and a Delta table with a removed file preview identically.
func TestTablePreviewMatchesJSONL(t *testing.T) {
	mdir := modelDir(t, nil)
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(testassets.Root(t), "examples", "chat", "train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(src), "\n")[:24]
	jsonl := writeFile(t, dir, "chat.jsonl", strings.Join(lines, ""))
	for _, d := range []string{"folder", "hf/data", "delta/sub dir"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rows := func(limit, offset int) string {
		return fmt.Sprintf("SELECT * FROM read_json('chat.jsonl') LIMIT %d OFFSET %d", limit, offset)
	}
	testassets.DuckDB(t, dir,
		"COPY ("+rows(24, 0)+") TO 'chat.parquet' (FORMAT parquet)",
		"COPY ("+rows(10, 0)+") TO 'folder/a.parquet' (FORMAT parquet)",
		"COPY ("+rows(14, 10)+") TO 'folder/b.parquet' (FORMAT parquet, COMPRESSION zstd)",
		"COPY ("+rows(10, 0)+") TO 'hf/data/train-00000-of-00002.parquet' (FORMAT parquet)",
		"COPY ("+rows(14, 10)+") TO 'hf/data/train-00001-of-00002.parquet' (FORMAT parquet)",
		"COPY ("+rows(3, 0)+") TO 'hf/data/test-00000-of-00001.parquet' (FORMAT parquet)",
		"COPY ("+rows(10, 0)+") TO 'delta/part-0.parquet' (FORMAT parquet)",
		"COPY ("+rows(5, 3)+") TO 'delta/part-1.parquet' (FORMAT parquet)",
		"COPY ("+rows(14, 10)+") TO 'delta/sub dir/part-2.parquet' (FORMAT parquet)")
	writeFile(t, filepath.Join(dir, "hf"), "README.md", "---\nlicense: mit\n---\n# test\n")
	deltaLog(t, filepath.Join(dir, "delta"), []string{"part-0.parquet", "part-1.parquet"}, []string{"part-1.parquet"}, []string{"sub dir/part-2.parquet"})

	want := previewOutput(t, mdir, Chat, jsonl, Options{})
	if n := strings.Count(want, "\n"); n != 24 {
		t.Fatalf("JSONL preview has %d examples, want 24:\n%s", n, want)
	}
	for _, p := range []string{"chat.parquet", "folder", "hf", "delta"} {
		if got := previewOutput(t, mdir, Chat, filepath.Join(dir, p), Options{}); got != want {
			t.Errorf("preview of %s differs from the JSONL's:\n got %.300s\nwant %.300s", p, got, want)
		}
	}
	// Time travel: version 0 still has the removed file, not the added one.
	v0 := int64(0)
	got := previewOutput(t, mdir, Chat, filepath.Join(dir, "delta"), Options{Version: &v0})
	if n := strings.Count(got, "\n"); n != 15 {
		t.Errorf("version 0 has %d examples, want 15", n)
	}
	// Validation reports the same numbers.
	jr, err := Validate(context.Background(), mdir, Chat, jsonl, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := Validate(context.Background(), mdir, Chat, filepath.Join(dir, "delta"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal([]any{jr.Stats, jr.Warnings, jr.StepsPerEpoch, jr.ProblemCount})
	ts, _ := json.Marshal([]any{tr.Stats, tr.Warnings, tr.StepsPerEpoch, tr.ProblemCount})
	if !bytes.Equal(js, ts) {
		t.Errorf("validation differs:\njsonl %s\ndelta %s", js, ts)
	}
	// The eval split of a Hugging Face folder: validation, else test.
	p, err := Prepare(context.Background(), PrepareSpec{ModelDir: mdir, Task: Chat, Data: filepath.Join(dir, "hf"), CacheDir: t.TempDir(),
		Options: Options{EvalData: filepath.Join(dir, "hf")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Stats().Examples != 24 || p.Eval() == nil || p.Eval().Stats().Examples != 3 {
		t.Errorf("prepare: %d train examples, eval %v; want 24 and 3", p.Stats().Examples, p.Eval())
	}
}

// TestTableInstructAndCPT: instruct columns and cpt text rows match their
// JSONL and text-file forms.
func TestTableInstructAndCPT(t *testing.T) {
	mdir := modelDir(t, nil)
	dir := t.TempDir()
	var inst strings.Builder
	for i := range 6 {
		fmt.Fprintf(&inst, `{"prompt":"What is %d + %d?","response":"It is %d."}`+"\n", i, i, 2*i)
	}
	writeFile(t, dir, "inst.jsonl", inst.String())
	if err := os.MkdirAll(filepath.Join(dir, "docs"), 0o755); err != nil {
		t.Fatal(err)
	}
	docs := []string{"The first document.\nIt has two lines.", "Second: ünïcode and numbers 12345.", "Third document"}
	var values []string
	for i, d := range docs {
		writeFile(t, filepath.Join(dir, "docs"), fmt.Sprintf("%d.txt", i), d)
		values = append(values, fmt.Sprintf("(%d, '%s')", i, strings.ReplaceAll(d, "\n", "' || chr(10) || '")))
	}
	testassets.DuckDB(t, dir,
		"COPY (SELECT 'ignored' AS id, * FROM read_json('inst.jsonl')) TO 'inst.parquet' (FORMAT parquet)",
		"COPY (SELECT text FROM (VALUES "+strings.Join(values, ", ")+") v(i, text) ORDER BY i) TO 'docs.parquet' (FORMAT parquet)")
	if a, b := previewOutput(t, mdir, Instruct, filepath.Join(dir, "inst.jsonl"), Options{}), previewOutput(t, mdir, Instruct, filepath.Join(dir, "inst.parquet"), Options{}); a != b || a == "" {
		t.Errorf("instruct preview differs:\n%s\n%s", a, b)
	}
	if a, b := previewOutput(t, mdir, CPT, filepath.Join(dir, "docs"), Options{ContextLength: 16}), previewOutput(t, mdir, CPT, filepath.Join(dir, "docs.parquet"), Options{ContextLength: 16}); a != b || a == "" {
		t.Errorf("cpt preview differs:\n%s\n%s", a, b)
	}
	// A table with both answer columns, each null where the other is set.
	testassets.DuckDB(t, dir, `COPY (SELECT * FROM (VALUES ('Hi?', 'Hello.', NULL), ('Bye?', NULL, 'Goodbye.')) v(prompt, response, completion))
		TO 'mixed.parquet' (FORMAT parquet)`)
	r, err := Validate(context.Background(), mdir, Instruct, filepath.Join(dir, "mixed.parquet"), Options{})
	if err != nil || r.ProblemCount != 0 || r.Stats.Examples != 2 {
		t.Fatalf("mixed answer columns: %v, %+v, %d examples", err, r.Problems, r.Stats.Examples)
	}
	// A table's progress counts its rows and, file by file, its bytes.
	var last Progress
	rows := 0
	if _, err := Validate(context.Background(), mdir, Instruct, filepath.Join(dir, "inst.parquet"), Options{Progress: func(p Progress) { last = p; rows++ }}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "inst.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	if last != (Progress{BytesRead: fi.Size(), TotalBytes: fi.Size(), Records: 6}) || rows != 7 {
		t.Fatalf("last table progress %+v after %d reports, want %d of %d bytes, 6 rows, 7 reports", last, rows, fi.Size(), fi.Size())
	}
}

// TestTableProblems: bad values are named by file, row group, row and
// field, through the same rules as JSONL; a missing column is named once.
func TestTableProblems(t *testing.T) {
	mdir := modelDir(t, nil)
	dir := t.TempDir()
	testassets.DuckDB(t, dir,
		`COPY (SELECT * FROM (VALUES
		   (1, [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'}]),
		   (2, [{'role': 'robot', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'}]),
		   (3, [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': NULL}])) v(i, messages) ORDER BY i)
		 TO 'bad.parquet' (FORMAT parquet)`,
		`COPY (SELECT 'x' AS conversation) TO 'nocol.parquet' (FORMAT parquet)`)
	r, err := Validate(context.Background(), mdir, Chat, filepath.Join(dir, "bad.parquet"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "bad.parquet")
	want := []string{
		f + ": row group 1, row 2: messages[0].role: role must be system, user or assistant, got \"robot\" [invalid_role]",
		f + ": row group 1, row 3: messages[1].content: missing key \"content\" [missing_key]",
	}
	var got []string
	for _, p := range r.Problems {
		got = append(got, p.String())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || r.Stats.Examples != 1 {
		t.Errorf("problems:\n%s\nwant\n%s\n(%d examples)", strings.Join(got, "\n"), strings.Join(want, "\n"), r.Stats.Examples)
	}
	r, err = Validate(context.Background(), mdir, Chat, filepath.Join(dir, "nocol.parquet"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.ProblemCount != 1 || r.Problems[0].Rule != RuleMissingColumn || !strings.Contains(r.Problems[0].Message, `no column "messages" (its columns: conversation)`) {
		t.Errorf("missing column: %+v", r.Problems)
	}
}
