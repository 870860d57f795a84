package tabular

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"hone/internal/testassets"
)

var streamWords = strings.Fields("the model learns from data and a user asks about weather code music history " +
	"why how what when is are was were can could should would please thanks help explain list show Paris Tokyo 42")

// writeDocs writes about size bytes of documents (0.5-3.5 KB of word text
// each) as a Parquet table of one text column through DuckDB, in row
// groups of 2048 rows. A page is the smallest unit a reader can
// decompress and DuckDB writes a row group's column as about one page, so
// the documents are small enough for a row group to hold many.
func writeDocs(t *testing.T, dir string, size int) string {
	t.Helper()
	var rs uint64 = 0x9e3779b97f4a7c15
	next := func() uint64 { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return rs }
	f, err := os.Create(filepath.Join(dir, "docs.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	enc := json.NewEncoder(w)
	var sb strings.Builder
	for total := 0; total < size; total += sb.Len() {
		sb.Reset()
		for n := 500 + int(next()%3000); sb.Len() < n; {
			sb.WriteString(streamWords[next()%uint64(len(streamWords))])
			sb.WriteByte(' ')
		}
		if err := enc.Encode(map[string]string{"text": sb.String()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// Through a table, whose scans yield whole 2048-row vectors, so every
	// row group has 2048 rows (read_json's uneven chunks would make some
	// twice as large, and the peak heap follows the largest).
	testassets.DuckDB(t, dir, "CREATE TABLE docs AS SELECT text FROM read_json('docs.jsonl')",
		"COPY docs TO 'docs.parquet' (FORMAT parquet, ROW_GROUP_SIZE 2048)")
	os.Remove(filepath.Join(dir, "docs.jsonl"))
	return filepath.Join(dir, "docs.parquet")
}

// peakScanHeap scans the table and returns the largest heap left after a
// forced collection, sampled every 500 rows.
func peakScanHeap(t *testing.T, path string) (peak uint64, rows int) {
	t.Helper()
	tab := open(t, path, Options{})
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	err := tab.Scan(context.Background(), []string{"text"}, func(string, []string) (bool, error) { return true, nil },
		func(_ Loc, _ []byte, _ *ValueError) error {
			if rows++; rows%500 == 0 {
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc-min(ms.HeapAlloc, base.HeapAlloc))
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return peak, rows
}

// TestStreaming scans a 16 MB and a 64 MB table: the heap holds about one
// row group's page (a few MB), far below the table, and does not grow
// with it. (The tokenizing pipeline behind it is the one text corpora go
// through, which TestCPTStreaming in package dataset measures.)
func TestStreaming(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MB table")
	}
	p16, n16 := peakScanHeap(t, writeDocs(t, t.TempDir(), 16<<20))
	p64, n64 := peakScanHeap(t, writeDocs(t, t.TempDir(), 64<<20))
	t.Logf("peak heap after GC: %.1f MB over %d rows (16 MB), %.1f MB over %d rows (64 MB)", float64(p16)/(1<<20), n16, float64(p64)/(1<<20), n64)
	if p64 > 16<<20 {
		t.Fatalf("scanning a 64 MB table held %d MB: not streaming", p64>>20)
	}
	if p64 > p16+4<<20 {
		t.Fatalf("the heap grows with the table: %d MB at 16 MB, %d MB at 64 MB", p16>>20, p64>>20)
	}
}
