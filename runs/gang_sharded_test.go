package runs_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/client"
)

// A 2-node run with sharding "parameters" (ZeRO-3) through real processes
// over loopback: the run keeps its sharding, its events say what each
// rank holds, its checkpoints are written per shard, and after rank 1 is
// SIGKILLed it resumes from its sharded checkpoint on two new ranks. The
// registered model is a normal HF directory whose weights equal an
// uninterrupted sharded 2-node run's, byte for byte.
func TestGangRunShardedParametersResumes(t *testing.T) {
	g, data, model := newGangProcs(t, "20s")
	c, logs := g.c, &g.logs
	ctx := context.Background()
	g.start(true)
	g.start(false)
	g.createCatalog()
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

	m, err := c.ShowModel(ctx, "main.demo.bot")
	if err != nil || len(m.Versions) != 1 {
		t.Fatalf("ShowModel = %+v, %v", m, err)
	}
	dir := m.Versions[0].StorageLocation
	if !exists(filepath.Join(dir, "config.json")) || exists(filepath.Join(dir, "shards")) {
		t.Fatalf("%s: want an HF model directory (config.json and safetensors, no shards)", dir)
	}
	g.sameAsUninterrupted(req, "the sharded run that lost rank 1")
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
