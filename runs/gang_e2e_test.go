package runs_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
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

// syncBuffer collects the processes' logs, written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A 2-node run through real processes sharing one PostgreSQL queue: `hone
// serve` and `hone worker`, one rank each over loopback. The run is
// refused while too few workers exist; once both are up it starts, and
// SIGKILL of the rank held by the worker process mid-run sends it back to
// the queue with an event naming the lost rank; alone, the survivor cannot
// complete a rendezvous (an event says so and the run stays queued); a new
// worker lets it resume from the last checkpoint and complete. Its
// registered weights equal an uninterrupted 2-node run's, byte for byte.
func TestGangRunSurvivesALostRank(t *testing.T) {
	home, data, model := fixture(t)
	_, dsn := storetest.OpenPostgres(t)
	bin := buildHone(t)
	addr := freeAddr(t)
	var logs syncBuffer
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
		return cmd
	}
	common := []string{"--db", dsn, "--home", home, "--data-root", data, "--concurrency", "1", "--lease-ttl", "2s",
		"--collective-addr", "127.0.0.1", "--collective-timeout", "5s", "--rendezvous-timeout", "4s"}
	start(append([]string{"serve", "--addr", addr}, common...)...)
	c, _ := client.New(client.Config{Server: "http://" + addr})
	ctx := context.Background()
	for i := 0; ; i++ {
		if _, err := c.ListRuns(ctx, client.ListRunsOptions{Limit: 1}); err == nil {
			break
		}
		if i > 300 {
			t.Fatalf("server did not start:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, n := range []string{"main", "main.demo"} {
		if err := c.CreateCatalog(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	req := request(data, model)
	req.TrainingDuration, req.BatchRows, req.GradAccum, req.Nodes = "12ba", 1, 2, 2
	req.EvalPrompts = nil
	// One worker (the server's own) can never provide two ranks.
	if _, err := c.CreateRun(ctx, req); err == nil || !strings.Contains(err.Error(), "nodes: 2 workers are needed") {
		t.Fatalf("create with nodes 2 and one worker = %v, want a refusal naming nodes", err)
	}
	workerB := start(append([]string{"worker"}, common...)...)
	var run *client.Run
	for i := 0; ; i++ {
		var err error
		if run, err = c.CreateRun(ctx, req); err == nil {
			break
		}
		if i > 300 {
			t.Fatalf("create with two workers: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Kill worker B's rank once a checkpoint exists.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		r, err := c.GetRun(ctx, run.Name)
		if err == nil && len(r.Checkpoints) > 0 {
			if r.Status == client.StatusCompleted {
				t.Fatal("run completed before a rank could be killed: make it longer")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint: %+v %v\n%s", r, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := workerB.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	workerB.Wait()
	pidTag := "-" + strconv.Itoa(workerB.Process.Pid) + "-"
	// The loss is named, then the survivor alone cannot form the group.
	lost := waitRunEvent(t, c, run.Name, 2*time.Minute, &logs, func(e client.Event) bool {
		return e.Type == client.StatusQueued && strings.Contains(e.Message, pidTag) && strings.Contains(e.Message, "127.0.0.1") &&
			(strings.Contains(e.Message, "was lost") || strings.Contains(e.Message, "stopped responding"))
	})
	if !strings.Contains(lost.Message, "rank ") {
		t.Errorf("the loss event does not name the rank: %q", lost.Message)
	}
	waitRunEvent(t, c, run.Name, 2*time.Minute, &logs, func(e client.Event) bool {
		return e.Type == client.StatusQueued && strings.Contains(e.Message, "rendezvous did not complete within 4s") &&
			strings.Contains(e.Message, "no worker joined as rank 1")
	})
	start(append([]string{"worker"}, common...)...)
	done := waitStatus(t, c, run.Name, 3*time.Minute, client.StatusCompleted, client.StatusFailed)
	if done.Status != client.StatusCompleted {
		t.Fatalf("run %s: %s\n%s", done.Status, done.Error, logs.String())
	}
	attempts := map[int64][]client.RunRank{}
	for _, k := range done.Ranks {
		attempts[k.Attempt] = append(attempts[k.Attempt], k)
		if k.LeftAt == nil || k.Host != "127.0.0.1" {
			t.Errorf("rank record %+v: want a host and a leave time", k)
		}
	}
	var last int64
	for a := range attempts {
		last = max(last, a)
	}
	if len(attempts) < 3 || len(attempts[last]) != 2 || attempts[last][0].Worker == attempts[last][1].Worker {
		t.Errorf("ranks %+v: want at least three attempts, the last with two workers", done.Ranks)
	}
	for _, k := range attempts[last] {
		if k.Note != "the run finished" {
			t.Errorf("final attempt's rank %d left with %q", k.Rank, k.Note)
		}
	}
	// The run's JSON never shows the rendezvous secret.
	resp, err := http.Get("http://" + addr + "/api/runs/" + run.Name)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), `"ranks"`) || strings.Contains(string(raw), "secret") {
		t.Errorf("run JSON: want ranks and no secret: %s", raw)
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
	files, _ := filepath.Glob(filepath.Join(m.Versions[0].StorageLocation, "*.safetensors"))
	if len(files) == 0 {
		t.Fatalf("no safetensors in %s", m.Versions[0].StorageLocation)
	}
	for _, f := range files {
		a, _ := os.ReadFile(f)
		b, err := os.ReadFile(filepath.Join(m.Versions[1].StorageLocation, filepath.Base(f)))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s differs between the 2-node run that lost a rank and the uninterrupted one (%v)", filepath.Base(f), err)
		}
	}
	fmt.Fprintln(os.Stderr, "2-node weights equal after a lost rank and resume")
}

func waitRunEvent(t *testing.T, c *client.Client, name string, timeout time.Duration, logs *syncBuffer, ok func(client.Event) bool) client.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, err := c.GetRun(context.Background(), name)
		if err == nil {
			for _, e := range r.Events {
				if ok(e) {
					return e
				}
			}
		}
		if time.Now().After(deadline) {
			var evs []string
			if r != nil {
				for _, e := range r.Events {
					evs = append(evs, e.Type+" "+e.Message)
				}
			}
			t.Fatalf("run %s: no such event (%v); events:\n%s\nlogs:\n%s", name, err, strings.Join(evs, "\n"), logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
