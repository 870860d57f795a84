package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/internal/testassets"
)

// preview runs `hone data preview` and returns what it prints.
func preview(t *testing.T, args ...string) string {
	t.Helper()
	cmd := dataCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"preview", "--limit", "0"}, args...))
	if err := cmd.Execute(); err != nil {
		t.Fatalf("hone data preview %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// TestDataPreviewTables: `hone data preview` prints the same for chat
// records in JSONL and in a DuckDB-written Parquet file, and --split and
// --version pick a Hugging Face split and a Delta version.
func TestDataPreviewTables(t *testing.T) {
	model := t.TempDir()
	tok := testassets.Path(t, "tokenizer-llama3_1/package/models")
	root := testassets.Root(t)
	for src, dst := range map[string]string{filepath.Join(tok, "tokenizer.json"): "tokenizer.json",
		filepath.Join(tok, "tokenizer_config.json"): "tokenizer_config.json", filepath.Join(root, "examples", "tiny-llama", "config.json"): "config.json"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(model, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "hf", "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	eval := filepath.Join(testassets.ChatData(t), "eval.jsonl")
	testassets.DuckDB(t, dir,
		"COPY (SELECT * FROM read_json('"+eval+"')) TO 'eval.parquet' (FORMAT parquet)",
		"COPY (SELECT * FROM read_json('"+eval+"') LIMIT 5) TO 'hf/data/train-00000-of-00001.parquet' (FORMAT parquet)",
		"COPY (SELECT * FROM read_json('"+eval+"')) TO 'hf/data/validation-00000-of-00001.parquet' (FORMAT parquet)")
	want := preview(t, "--model", model, "--data", eval)
	if n := strings.Count(want, "\n"); n != 40 {
		t.Fatalf("JSONL preview printed %d examples, want 40 (the fixed chat data)", n)
	}
	if got := preview(t, "--model", model, "--data", filepath.Join(dir, "eval.parquet")); got != want {
		t.Errorf("Parquet preview differs from JSONL's")
	}
	if got := preview(t, "--model", model, "--data", filepath.Join(dir, "hf"), "--split", "validation"); got != want {
		t.Errorf("--split validation preview differs from JSONL's")
	}
	if got := preview(t, "--model", model, "--data", filepath.Join(dir, "hf")); strings.Count(got, "\n") != 5 {
		t.Errorf("train split: %d examples, want 5", strings.Count(got, "\n"))
	}
	// A Delta table: version 0 holds all 40 records, version 1 replaces
	// them by the first 5.
	delta := filepath.Join(dir, "delta")
	if err := os.MkdirAll(filepath.Join(delta, "_delta_log"), 0o755); err != nil {
		t.Fatal(err)
	}
	testassets.DuckDB(t, delta,
		"COPY (SELECT * FROM read_json('"+eval+"')) TO 'all.parquet' (FORMAT parquet)",
		"COPY (SELECT * FROM read_json('"+eval+"') LIMIT 5) TO 'five.parquet' (FORMAT parquet)")
	schema := `{\"type\":\"struct\",\"fields\":[{\"name\":\"messages\",\"type\":{\"type\":\"array\",\"elementType\":{\"type\":\"struct\",\"fields\":[{\"name\":\"role\",\"type\":\"string\",\"nullable\":true,\"metadata\":{}},{\"name\":\"content\",\"type\":\"string\",\"nullable\":true,\"metadata\":{}}]},\"containsNull\":true},\"nullable\":true,\"metadata\":{}}]}`
	commits := []string{
		`{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}` + "\n" +
			`{"metaData":{"id":"t","format":{"provider":"parquet","options":{}},"schemaString":"` + schema + `","partitionColumns":[],"configuration":{}}}` + "\n" +
			`{"add":{"path":"all.parquet","partitionValues":{},"size":1,"modificationTime":0,"dataChange":true}}` + "\n",
		`{"remove":{"path":"all.parquet","dataChange":true}}` + "\n" +
			`{"add":{"path":"five.parquet","partitionValues":{},"size":1,"modificationTime":0,"dataChange":true}}` + "\n",
	}
	for v, c := range commits {
		if err := os.WriteFile(filepath.Join(delta, "_delta_log", fmt.Sprintf("%020d.json", v)), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := preview(t, "--model", model, "--data", delta, "--version", "0"); got != want {
		t.Errorf("Delta --version 0 preview differs from JSONL's")
	}
	if got := preview(t, "--model", model, "--data", delta); strings.Count(got, "\n") != 5 {
		t.Errorf("Delta latest: %d examples, want 5", strings.Count(got, "\n"))
	}
}
