package runs_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/client"
	"hone/store/storetest"
)

// A 2-node run with sharding "parameters" (ZeRO-3) through real processes
// over loopback: the run keeps its sharding, its events say what each
// rank holds, its checkpoints are written per shard, and after rank 1 is
// SIGKILLed it resumes from its sharded checkpoint on two new ranks. The
// registered model is a normal HF directory whose weights equal an
// uninterrupted sharded 2-node run's, byte for byte.
func TestGangRunShardedParametersResumes(t *testing.T) {
	home, data, model := fixture(t)
	_, dsn := storetest.OpenPostgres(t)
	g := newGangProcs(t, home, data, dsn, "20s")
	c, logs := g.c, &g.logs
	ctx := context.Background()
	g.start(true)
	g.start(false)
	for _, n := range []string{"main", "main.demo"} {
		if err := c.CreateCatalog(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	req := request(data, model)
	req.TrainingDuration, req.BatchRows, req.GradAccum, req.Nodes, req.Sharding = "16ba", 1, 2, 2, "parameters"
	req.EvalPrompts = nil
	var run *client.Run
	for i := 0; ; i++ { // the second worker is counted once it has reported in
		var err error
		if run, err = c.CreateRun(ctx, req); err == nil {
			break
		} else if i > 100 || !strings.Contains(err.Error(), "workers are needed") {
			t.Fatalf("create: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if run.Config.Sharding != "parameters" {
		t.Fatalf("run config sharding %q, want parameters", run.Config.Sharding)
	}
	waitRunEvent(t, c, run.Name, 2*time.Minute, logs, func(e client.Event) bool {
		return strings.Contains(e.Message, "all 2 ranks connected") && strings.Contains(e.Message, "sharding parameters: each rank holds 1/2")
	})

	// SIGKILL rank 1 once the run has trained past a (sharded) checkpoint.
	_, killedAt := g.kill(run.Name, 1, 0)
	if r, err := c.GetRun(ctx, run.Name); err != nil {
		t.Fatal(err)
	} else if ck := r.Checkpoints[len(r.Checkpoints)-1]; !exists(filepath.Join(ck.Path, "shards", "manifest.json")) {
		t.Fatalf("checkpoint of step %d in %s: want a sharded checkpoint (shards/manifest.json)", ck.Step, ck.Path)
	}
	waitRunEvent(t, c, run.Name, 2*time.Minute, logs, func(e client.Event) bool {
		return e.Type == client.StatusQueued && strings.Contains(e.Message, "rank 1")
	})
	g.start(false)
	done := waitStatus(t, c, run.Name, 3*time.Minute, client.StatusCompleted, client.StatusFailed)
	if done.Status != client.StatusCompleted {
		t.Fatalf("run %s: %s\n%s", done.Status, done.Error, logs.String())
	}
	resumed := false
	for _, e := range done.Events {
		resumed = resumed || strings.Contains(e.Message, "resumes the run")
	}
	if !resumed || done.Config.Sharding != "parameters" {
		t.Errorf("run after rank 1 was lost at step %d: resumed %v, sharding %q", killedAt, resumed, done.Config.Sharding)
	}

	ref, err := c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if d := waitStatus(t, c, ref.Name, 3*time.Minute, client.StatusCompleted, client.StatusFailed); d.Status != client.StatusCompleted {
		t.Fatalf("reference run %s: %s\n%s", d.Status, d.Error, logs.String())
	}
	m, err := c.ShowModel(ctx, "main.demo.bot")
	if err != nil || len(m.Versions) != 2 {
		t.Fatalf("ShowModel = %+v, %v", m, err)
	}
	dir := m.Versions[0].StorageLocation
	files, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil || len(files) == 0 {
		t.Fatalf("%s: want an HF model directory (config.json, safetensors): %v, %v", dir, err, files)
	}
	if _, err := os.Stat(filepath.Join(dir, "shards")); !os.IsNotExist(err) {
		t.Errorf("%s/shards: want no shard files in the registered model (%v)", dir, err)
	}
	sameWeights(t, dir, m.Versions[1].StorageLocation, "the sharded run that lost rank 1 and the uninterrupted one")
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
