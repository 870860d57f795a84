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
// refused while too few workers exist. With one of two workers gone, rank
// 0 cannot complete the rendezvous: an event says so and the run goes back
// to the queue; once a second worker is up it starts. SIGKILL of rank 1
// mid-run sends it back to the queue with an event naming the lost rank
// and host; a new process lets it resume from the last checkpoint. SIGKILL of rank 0 later is named by the reaper
// the same way, and the run resumes again and completes. Its registered
// weights equal an uninterrupted 2-node run's, byte for byte.
func TestGangRunSurvivesALostRank(t *testing.T) {
	home, data, model := fixture(t)
	_, dsn := storetest.OpenPostgres(t)
	bin := buildHone(t)
	addr := freeAddr(t)
	var logs syncBuffer
	common := []string{"--db", dsn, "--home", home, "--data-root", data, "--concurrency", "1", "--lease-ttl", "2s",
		"--collective-addr", "127.0.0.1", "--collective-timeout", "5s", "--rendezvous-timeout", "4s"}
	var mu sync.Mutex
	procs := map[int]bool{} // pid: is the server
	start := func(serve bool) *exec.Cmd {
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
		return cmd
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
	for _, n := range []string{"main", "main.demo"} {
		if err := c.CreateCatalog(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	req := request(data, model)
	req.TrainingDuration, req.BatchRows, req.GradAccum, req.Nodes = "16ba", 1, 2, 2
	req.EvalPrompts = nil
	// One worker (the server's own) can never provide two ranks.
	if _, err := c.CreateRun(ctx, req); err == nil || !strings.Contains(err.Error(), "nodes: 2 workers are needed") {
		t.Fatalf("create with nodes 2 and one worker = %v, want a refusal naming nodes", err)
	}
	// A second worker registers, then shuts down: the queue can provide
	// two nodes (it counts workers seen within a day), but the server's
	// worker, rank 0, waits for a rank 1 in vain and re-queues the run.
	b := start(false)
	for !strings.Contains(logs.String(), "hone worker started") {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	b.Process.Signal(syscall.SIGTERM)
	b.Wait()
	run, err := c.CreateRun(ctx, req)
	if err != nil {
		t.Fatalf("create with two workers seen: %v\n%s", err, logs.String())
	}
	waitRunEvent(t, c, run.Name, 2*time.Minute, &logs, func(e client.Event) bool {
		return e.Type == client.StatusQueued && strings.Contains(e.Message, "rendezvous did not complete within 4s") &&
			strings.Contains(e.Message, "no worker joined as rank 1")
	})
	start(false)

	// kill SIGKILLs the process holding rank of the newest attempt once it
	// has trained past a checkpoint after step `after`, and returns the
	// pid tag of its worker ID and the step it had reached. A killed
	// server is started again (its API is the test's way in).
	kill := func(rank, after int) (string, int) {
		deadline := time.Now().Add(3 * time.Minute)
		for {
			r, err := c.GetRun(ctx, run.Name)
			if err == nil && r.Status == client.StatusCompleted {
				t.Fatal("run completed before a rank could be killed: make it longer")
			}
			if err == nil && r.Status == client.StatusRunning && len(r.Checkpoints) > 0 && r.Checkpoints[len(r.Checkpoints)-1].Step > after &&
				r.Metrics != nil && r.Metrics.Step > r.Checkpoints[len(r.Checkpoints)-1].Step {
				var last int64
				for _, k := range r.Ranks {
					last = max(last, k.Attempt)
				}
				for _, k := range r.Ranks {
					if k.Attempt != last || k.Rank != rank || k.LeftAt != nil {
						continue
					}
					mu.Lock()
					var pid int
					var serve bool
					for p, sv := range procs {
						if strings.Contains(k.Worker, "-"+strconv.Itoa(p)+"-") {
							pid, serve = p, sv
						}
					}
					delete(procs, pid)
					mu.Unlock()
					if pid == 0 {
						t.Fatalf("rank %d's worker %s is none of the test's processes", rank, k.Worker)
					}
					if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
						t.Fatal(err)
					}
					if serve {
						time.Sleep(200 * time.Millisecond) // its port is free once it is gone
						start(true)
						ready()
					}
					return "-" + strconv.Itoa(pid) + "-", r.Metrics.Step
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("rank %d never ran past a checkpoint after step %d: %+v %v\n%s", rank, after, r, err, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	lostEvent := func(tag, rank string) {
		t.Helper()
		waitRunEvent(t, c, run.Name, 2*time.Minute, &logs, func(e client.Event) bool {
			return e.Type == client.StatusQueued && strings.Contains(e.Message, tag) && strings.Contains(e.Message, rank) &&
				strings.Contains(e.Message, "127.0.0.1") && (strings.Contains(e.Message, "was lost") || strings.Contains(e.Message, "stopped responding"))
		})
	}

	// Rank 1 is lost: rank 0 names it.
	tag, step := kill(1, 0)
	lostEvent(tag, "rank 1")
	start(false)
	// Rank 0 is lost: its lease runs out and the reaper names it.
	tag, _ = kill(0, step)
	lostEvent(tag, "rank 0")
	start(false)

	done := waitStatus(t, c, run.Name, 3*time.Minute, client.StatusCompleted, client.StatusFailed)
	if done.Status != client.StatusCompleted {
		t.Fatalf("run %s: %s\n%s", done.Status, done.Error, logs.String())
	}
	attempts := map[int64][]client.RunRank{}
	for _, k := range done.Ranks {
		attempts[k.Attempt] = append(attempts[k.Attempt], k)
		if k.Host != "127.0.0.1" {
			t.Errorf("rank record %+v: want host 127.0.0.1", k)
		}
	}
	var last int64
	for a := range attempts {
		last = max(last, a)
	}
	if len(attempts) < 4 || len(attempts[last]) != 2 || attempts[last][0].Worker == attempts[last][1].Worker {
		t.Errorf("ranks %+v: want at least four attempts, the last with two workers", done.Ranks)
	}
	for _, k := range attempts[last] {
		if k.LeftAt == nil || k.Note != "the run finished" {
			t.Errorf("final attempt's rank %d left at %v with %q", k.Rank, k.LeftAt, k.Note)
		}
	}
	// The run's JSON shows the ranks and never the rendezvous secret.
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
			t.Fatalf("%s differs between the 2-node run that lost ranks and the uninterrupted one (%v)", filepath.Base(f), err)
		}
	}
	fmt.Fprintln(os.Stderr, "2-node weights equal after losing rank 1, then rank 0, and resuming")
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
