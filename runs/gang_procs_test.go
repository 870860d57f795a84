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

// gangProcs runs `hone serve` and `hone worker` processes sharing one
// PostgreSQL queue, for multi-node runs over loopback; the server's API is
// the tests' way in.
type gangProcs struct {
	t      *testing.T
	bin    string
	addr   string // the server's
	common []string
	logs   syncBuffer
	c      *client.Client
	mu     sync.Mutex
	procs  map[int]bool // pid: is the server
}

// newGangProcs prepares processes over the test fixture (returning its
// data root and model) and a PostgreSQL database of their own.
func newGangProcs(t *testing.T, rendezvousTimeout string) (g *gangProcs, data, model string) {
	home, data, model := fixture(t)
	_, dsn := storetest.OpenPostgres(t)
	g = &gangProcs{t: t, bin: buildHone(t), addr: freeAddr(t), procs: map[int]bool{},
		common: []string{"--db", dsn, "--home", home, "--data-root", data, "--concurrency", "1", "--lease-ttl", "2s",
			"--collective-addr", "127.0.0.1", "--collective-timeout", "5s", "--rendezvous-timeout", rendezvousTimeout}}
	g.c, _ = client.New(client.Config{Server: "http://" + g.addr})
	return g, data, model
}

// createCatalog creates main.demo, where request() registers.
func (g *gangProcs) createCatalog() {
	for _, n := range []string{"main", "main.demo"} {
		if err := g.c.CreateCatalog(context.Background(), n, ""); err != nil {
			g.t.Fatal(err)
		}
	}
}

// sameAsUninterrupted trains req again without interruptions and fails
// the test unless its registered weights (version 2 of main.demo.bot)
// equal those of the first run (version 1), byte for byte.
func (g *gangProcs) sameAsUninterrupted(req client.CreateRunRequest, what string) {
	t, ctx := g.t, context.Background()
	t.Helper()
	ref, err := g.c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if d := waitStatus(t, g.c, ref.Name, 3*time.Minute, client.StatusCompleted, client.StatusFailed); d.Status != client.StatusCompleted {
		t.Fatalf("reference run %s: %s\n%s", d.Status, d.Error, g.logs.String())
	}
	m, err := g.c.ShowModel(ctx, "main.demo.bot")
	if err != nil || len(m.Versions) != 2 {
		t.Fatalf("ShowModel = %+v, %v", m, err)
	}
	a, b := m.Versions[0].StorageLocation, m.Versions[1].StorageLocation
	files, _ := filepath.Glob(filepath.Join(a, "*.safetensors"))
	if len(files) == 0 {
		t.Fatalf("no safetensors in %s", a)
	}
	for _, f := range files {
		x, _ := os.ReadFile(f)
		y, err := os.ReadFile(filepath.Join(b, filepath.Base(f)))
		if err != nil || !bytes.Equal(x, y) {
			t.Fatalf("%s differs between %s and the uninterrupted run (%v)", filepath.Base(f), what, err)
		}
	}
}

// start starts a worker, or the server (which waits until its API answers).
func (g *gangProcs) start(serve bool) *exec.Cmd {
	args := append([]string{"worker"}, g.common...)
	if serve {
		args = append([]string{"serve", "--addr", g.addr}, g.common...)
	}
	cmd := exec.Command(g.bin, args...)
	cmd.Stdout, cmd.Stderr = &g.logs, &g.logs
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.mu.Lock()
	g.procs[cmd.Process.Pid] = serve
	g.mu.Unlock()
	g.t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	if serve {
		for i := 0; ; i++ {
			if _, err := g.c.ListRuns(context.Background(), client.ListRunsOptions{Limit: 1}); err == nil {
				break
			}
			if i > 300 {
				g.t.Fatalf("server did not start:\n%s", g.logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return cmd
}

// kill SIGKILLs the process holding rank of the run's newest attempt once
// it has trained past a checkpoint after step `after`, and returns the pid
// tag of its worker ID and the step it had reached. A killed server is
// started again.
func (g *gangProcs) kill(run string, rank, after int) (string, int) {
	t := g.t
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		r, err := g.c.GetRun(context.Background(), run)
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
				g.mu.Lock()
				var pid int
				var serve bool
				for p, sv := range g.procs {
					if strings.Contains(k.Worker, "-"+strconv.Itoa(p)+"-") {
						pid, serve = p, sv
					}
				}
				delete(g.procs, pid)
				g.mu.Unlock()
				if pid == 0 {
					t.Fatalf("rank %d's worker %s is none of the test's processes", rank, k.Worker)
				}
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				if serve {
					time.Sleep(200 * time.Millisecond) // its port is free once it is gone
					g.start(true)
				}
				return "-" + strconv.Itoa(pid) + "-", r.Metrics.Step
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("rank %d never ran past a checkpoint after step %d: %+v %v\n%s", rank, after, r, err, g.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
