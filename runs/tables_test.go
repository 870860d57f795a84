package runs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/client"
	"hone/internal/testassets"
	"hone/store/storetest"
)

// writeDelta makes a Delta table of the example chat data in dir: DuckDB
// writes the Parquet files; version 0 adds two, version 1 removes the
// second (a duplicate of rows of the first) and adds the rest.
func writeDelta(t *testing.T, jsonl, dir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "_delta_log"), 0o755); err != nil {
		t.Fatal(err)
	}
	sel := func(limit, offset int) string {
		return fmt.Sprintf("SELECT * FROM read_json('%s') LIMIT %d OFFSET %d", jsonl, limit, offset)
	}
	testassets.DuckDB(t, dir,
		"COPY ("+sel(200, 0)+") TO 'part-0.parquet' (FORMAT parquet)",
		"COPY ("+sel(50, 0)+") TO 'part-1.parquet' (FORMAT parquet)",
		"COPY ("+sel(200, 200)+") TO 'part-2.parquet' (FORMAT parquet)")
	schema := `{\"type\":\"struct\",\"fields\":[{\"name\":\"messages\",\"type\":{\"type\":\"array\",\"elementType\":{\"type\":\"struct\",\"fields\":[{\"name\":\"role\",\"type\":\"string\",\"nullable\":true,\"metadata\":{}},{\"name\":\"content\",\"type\":\"string\",\"nullable\":true,\"metadata\":{}}]},\"containsNull\":true},\"nullable\":true,\"metadata\":{}}]}`
	add := func(p string) string {
		return `{"add":{"path":"` + p + `","partitionValues":{},"size":1,"modificationTime":0,"dataChange":true}}`
	}
	commits := []string{
		`{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}` + "\n" +
			`{"metaData":{"id":"t","format":{"provider":"parquet","options":{}},"schemaString":"` + schema + `","partitionColumns":[],"configuration":{}}}` + "\n" +
			add("part-0.parquet") + "\n" + add("part-1.parquet") + "\n",
		`{"remove":{"path":"part-1.parquet","dataChange":true}}` + "\n" + add("part-2.parquet") + "\n",
	}
	for v, c := range commits {
		if err := os.WriteFile(filepath.Join(dir, "_delta_log", fmt.Sprintf("%020d.json", v)), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTrainFromTables runs the real trainer through the runs service on
// a Delta table in the data root, and on data put into a catalog volume
// through the API and named by its /Volumes and dbfs:/Volumes paths, and
// from a Hugging Face dataset in the local cache named by its id.
func TestTrainFromTables(t *testing.T) {
	ctx := context.Background()
	st, _ := storetest.OpenSQLite(t)
	home, data, model := fixture(t)
	writeDelta(t, filepath.Join(data, "train.jsonl"), filepath.Join(data, "chat-delta"))
	c := serveInProcess(t, st, home, data)
	if _, err := c.CreateVolume(ctx, "main.demo.files"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"train.jsonl", "eval.jsonl"} {
		fh, err := os.Open(filepath.Join(data, f))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.PutFile(ctx, "/Volumes/main/demo/files/ift/"+f, fh)
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if ls, err := c.ListVolume(ctx, "/Volumes/main/demo/files/ift"); err != nil || len(ls) != 2 {
		t.Fatalf("ListVolume = %+v, %v", ls, err)
	}

	// A volume path outside its volume is refused before anything runs.
	req := request(data, model)
	req.TrainDataPath = "/Volumes/main/demo/files/../../../../../../../etc/passwd"
	if _, err := c.CreateRun(ctx, req); client.StatusOf(err) != 400 {
		t.Fatalf("CreateRun(escaping volume path) = %v, want 400", err)
	}

	// A Hugging Face dataset in the local cache, named by its id.
	snap := filepath.Join(home, "hf", "hub", "datasets--acme--shop-chat", "snapshots", "0123abcd")
	if err := os.MkdirAll(filepath.Join(snap, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	testassets.DuckDB(t, filepath.Join(snap, "data"), "COPY (SELECT * FROM read_json('"+filepath.Join(data, "train.jsonl")+
		"')) TO 'train-00000-of-00001.parquet' (FORMAT parquet)")
	refs := filepath.Join(home, "hf", "hub", "datasets--acme--shop-chat", "refs")
	if err := os.MkdirAll(refs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(refs, "main"), []byte("0123abcd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	req = request(data, model)
	req.TrainDataPath = "acme/not-cached"
	if _, err := c.CreateRun(ctx, req); client.StatusOf(err) != 400 {
		t.Fatalf("CreateRun(uncached dataset id) = %v, want 400", err)
	}

	for _, paths := range [][2]string{
		{"acme/shop-chat", filepath.Join(data, "eval.jsonl")},
		{filepath.Join(data, "chat-delta"), filepath.Join(data, "eval.jsonl")},
		{"dbfs:/Volumes/main/demo/files/ift/train.jsonl", "/Volumes/main/demo/files/ift/eval.jsonl"},
	} {
		req := request(data, model)
		req.TrainDataPath, req.EvalDataPath = paths[0], paths[1]
		req.TrainingDuration = "2ba"
		run, err := c.CreateRun(ctx, req)
		if err != nil {
			t.Fatalf("CreateRun(%s): %v", paths[0], err)
		}
		done := waitStatus(t, c, run.Name, 5*time.Minute, client.StatusCompleted, client.StatusFailed)
		if done.Status != client.StatusCompleted || done.Metrics == nil || done.Metrics.Step != 2 {
			t.Fatalf("run on %s: %s %s; metrics %+v", paths[0], done.Status, done.Error, done.Metrics)
		}
	}

	// A run reads the Delta version and the splits it names: version 0
	// holds the duplicated file the latest version removed, and the HF
	// dataset's eval split is named.
	if err := os.MkdirAll(filepath.Join(snap, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	testassets.DuckDB(t, filepath.Join(snap, "data"), "COPY (SELECT * FROM read_json('"+filepath.Join(data, "eval.jsonl")+
		"')) TO 'dev-00000-of-00001.parquet' (FORMAT parquet)")
	examples := map[string]int64{}
	for _, version := range []*int64{nil, new(int64)} {
		req := request(data, model)
		req.TrainDataPath, req.TrainDataVersion = filepath.Join(data, "chat-delta"), version
		req.EvalDataPath, req.EvalDataSplit = "acme/shop-chat", "dev"
		req.TrainingDuration = "1ba"
		run, err := c.CreateRun(ctx, req)
		if err != nil {
			t.Fatalf("CreateRun(version %v): %v", version, err)
		}
		done := waitStatus(t, c, run.Name, 5*time.Minute, client.StatusCompleted, client.StatusFailed)
		var rep struct{ Stats struct{ Examples int64 } }
		if err := json.Unmarshal([]byte(done.Validation), &rep); done.Status != client.StatusCompleted || err != nil {
			t.Fatalf("run on version %v: %s %s; report %q (%v)", version, done.Status, done.Error, done.Validation, err)
		}
		examples[fmt.Sprint(version != nil)] = rep.Stats.Examples
	}
	if examples["false"] == 0 || examples["true"] != 2*examples["false"] {
		t.Errorf("examples: version 0 %d, latest %d; want twice as many at version 0 (a file duplicated, then removed)",
			examples["true"], examples["false"])
	}
	req = request(data, model)
	req.TrainDataPath, req.EvalDataPath, req.EvalDataSplit = "acme/shop-chat", "acme/shop-chat", "nope"
	if _, err := c.CreateRun(ctx, req); client.StatusOf(err) != 400 || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("CreateRun(missing eval split) = %v, want 400 naming the split", err)
	}
}
