package dataset

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkProgress validates data with a progress callback and checks that
// the reports never go back nor past the total, and that the last one
// counts the data's bytes (its files' sizes) and its records.
func checkProgress(t *testing.T, task Task, data string, opt Options, wantRecords int64) {
	t.Helper()
	var total int64
	_ = filepath.WalkDir(data, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	var got []Progress
	opt.Progress = func(p Progress) { got = append(got, p) }
	if _, err := Validate(context.Background(), modelDir(t, nil), task, data, opt); err != nil {
		t.Fatal(err)
	}
	if len(got) < 2 {
		t.Fatalf("%d progress reports, want one per record and a last one", len(got))
	}
	var prev Progress
	for i, p := range got {
		if p.TotalBytes != total || p.BytesRead < prev.BytesRead || p.Records < prev.Records || p.BytesRead > total || p.Records > wantRecords {
			t.Fatalf("report %d: %+v after %+v (total %d bytes, %d records)", i, p, prev, total, wantRecords)
		}
		prev = p
	}
	if mid := got[0]; mid.Records != 1 || mid.BytesRead <= 0 || mid.BytesRead >= total {
		t.Fatalf("first report %+v: want 1 record and some but not all of the %d bytes", mid, total)
	}
	if last := got[len(got)-1]; last.BytesRead != total || last.Records != wantRecords {
		t.Fatalf("last report %+v, want %d bytes and %d records", last, total, wantRecords)
	}
}

func TestValidateProgressJSONL(t *testing.T) {
	good := `{"messages":[{"role":"user","content":"hi %d"},{"role":"assistant","content":"hello"}]}`
	var lines []string
	for i := range 40 {
		lines = append(lines, fmt.Sprintf(good, i))
	}
	lines = append(lines, `{"messages":"bad"}`, "", fmt.Sprintf(good, 99)) // a bad record counts; a blank line does not
	dir := t.TempDir()
	writeFile(t, dir, "a.jsonl", strings.Join(lines, "\n")+"\n")
	writeFile(t, dir, "b.jsonl", fmt.Sprintf(good, 7)) // no final newline
	checkProgress(t, Chat, dir, Options{Workers: 2}, 43)
}

func TestValidateProgressCPT(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.txt", "A fine document.\nSecond line.\n")
	writeFile(t, dir, "b.txt", strings.Repeat("Another document, a longer one. ", 200))
	checkProgress(t, CPT, dir, Options{ContextLength: 16}, 2)
}
