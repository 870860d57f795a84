package runs_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	bin := buildHone(t)
	addr := freeAddr(t)
	var logs syncBuffer
	common := []string{"--db", dsn, "--home", home, "--data-root", data, "--concurrency", "1", "--lease-ttl", "2s",
		"--collective-addr", "127.0.0.1", "--collective-timeout", "5s", "--rendezvous-timeout", "20s"}
	var mu sync.Mutex
	procs := map[int]bool{} // pid: is the server
	start := func(serve bool) {
		args := append([]string{"worker"}, common...)
		if serve {
			args = append([]string{"serve", "--addr", addr}, common...)
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		procs[cmd.Process.Pid] = serve
		mu.Unlock()
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	}
	c, _ := client.New(client.Config{Server: "http://" + addr})
	ctx := context.Background()
	ready := func() {
		for i := 0; ; i++ {
			if _, err := c.ListRuns(ctx, client.ListRunsOptions{Limit: 1}); err == nil {
				return
			}
			if i > 300 {
				t.Fatalf("server did not start:\n%s", logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	start(true)
	ready()
	start(false)
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
	waitRunEvent(t, c, run.Name, 2*time.Minute, &logs, func(e client.Event) bool {
		return strings.Contains(e.Message, "all 2 ranks connected") && strings.Contains(e.Message, "sharding parameters: each rank holds 1/2")
	})

	// SIGKILL rank 1 once the run has trained past a checkpoint.
	var killedAt int
	for deadline := time.Now().Add(3 * time.Minute); killedAt == 0; {
		r, err := c.GetRun(ctx, run.Name)
		if err == nil && r.Status == client.StatusCompleted {
			t.Fatal("run completed before a rank could be killed: make it longer")
		}
		if err == nil && r.Status == client.StatusRunning && len(r.Checkpoints) > 0 && r.Metrics != nil &&
			r.Metrics.Step > r.Checkpoints[len(r.Checkpoints)-1].Step {
			ck := r.Checkpoints[len(r.Checkpoints)-1]
			if _, err := os.Stat(filepath.Join(ck.Path, "shards", "manifest.json")); err != nil {
				t.Fatalf("checkpoint of step %d: %v; want a sharded checkpoint", ck.Step, err)
			}
			for _, k := range r.Ranks {
				if k.Rank != 1 || k.LeftAt != nil {
					continue
				}
				mu.Lock()
				pid, serve := 0, false
				for p, sv := range procs {
					if strings.Contains(k.Worker, "-"+strconv.Itoa(p)+"-") {
						pid, serve = p, sv
					}
				}
				delete(procs, pid)
				mu.Unlock()
				if pid == 0 {
					t.Fatalf("rank 1's worker %s is none of the test's processes", k.Worker)
				}
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				if serve {
					time.Sleep(200 * time.Millisecond)
					start(true)
					ready()
				}
				killedAt = r.Metrics.Step
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the run never trained past a checkpoint: %+v %v\n%s", r, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitRunEvent(t, c, run.Name, 2*time.Minute, &logs, func(e client.Event) bool {
		return e.Type == client.StatusQueued && strings.Contains(e.Message, "rank 1")
	})
	start(false)
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
	for _, f := range files {
		a, _ := os.ReadFile(f)
		b, err := os.ReadFile(filepath.Join(m.Versions[1].StorageLocation, filepath.Base(f)))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s differs between the sharded run that lost rank 1 and the uninterrupted one (%v)", filepath.Base(f), err)
		}
	}
}
