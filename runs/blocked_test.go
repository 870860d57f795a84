package runs_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hone/client"
	"hone/store"
	"hone/store/storetest"
)

// fifoData makes a named pipe for train data that nobody writes: a run
// reading it blocks in open(2), where no context reaches. Cleanup opens
// its write end once, so the abandoned reader returns.
func fifoData(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "pipe.jsonl")
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if f, err := os.OpenFile(p, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	return p
}

// blockedRequest is a run on the FIFO, created without validation (which
// would block the create request itself).
func blockedRequest(data, model string, fifo string) client.CreateRunRequest {
	req := request(data, model)
	req.TrainDataPath, req.EvalDataPath, req.ValidateInputs = fifo, "", new(bool)
	return req
}

// waitEvent waits for an event of the run whose message holds want.
func waitEvent(t *testing.T, c *client.Client, name, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l, err := c.ListEvents(context.Background(), name, client.ListEventsOptions{}); err == nil {
			for _, e := range l.Events {
				if strings.Contains(e.Message, want) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s: no event %q after %s", name, want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCancelRunBlockedOnFIFO: a run blocked opening its data (a FIFO
// nobody writes) reaches STOPPED soon after a cancel, though the trainer
// never returns.
func TestCancelRunBlockedOnFIFO(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	ctx := context.Background()
	home, data, model := fixture(t)
	c := serveInProcess(t, st, home, data)
	run, err := c.CreateRun(ctx, blockedRequest(data, model, fifoData(t, data)))
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, c, run.Name, "preparing data", time.Minute)
	time.Sleep(500 * time.Millisecond) // into the blocking open
	if _, err := c.CancelRuns(ctx, client.CancelRequest{Names: []string{run.Name}}); err != nil {
		t.Fatal(err)
	}
	// The cancel poll (1s) and the stop grace (5s), with room to spare;
	// before the bound the run stayed STOPPING for good.
	done := waitStatus(t, c, run.Name, 30*time.Second, client.StatusStopped)
	if done.Status != client.StatusStopped {
		t.Fatalf("run %s after cancel, want STOPPED", done.Status)
	}
}

// TestSIGTERMServeWithRunBlockedOnFIFO: SIGTERM stops a real `hone serve`
// whose worker is blocked opening a FIFO, within a bounded time, and the
// run is re-queued for the next worker.
func TestSIGTERMServeWithRunBlockedOnFIFO(t *testing.T) {
	home, data, model := fixture(t)
	bin := buildHone(t)
	addr := freeAddr(t)
	var logs bytes.Buffer
	srv := exec.Command(bin, "serve", "--addr", addr, "--home", home, "--data-root", data)
	srv.Stdout, srv.Stderr = &logs, &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		srv.Process.Kill()
		<-exited
	}()
	c, _ := client.New(client.Config{Server: "http://" + addr})
	ctx := context.Background()
	for i := 0; ; i++ {
		if _, err := c.ListRuns(ctx, client.ListRunsOptions{Limit: 1}); err == nil {
			break
		}
		if i > 600 {
			t.Fatalf("hone serve did not come up:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range []string{"main", "main.demo"} {
		if err := c.CreateCatalog(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	run, err := c.CreateRun(ctx, blockedRequest(data, model, fifoData(t, data)))
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, c, run.Name, "preparing data", time.Minute)
	time.Sleep(500 * time.Millisecond)
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the deferred wait
	case <-time.After(45 * time.Second):
		t.Fatalf("hone serve still running 45 s after SIGTERM; logs:\n%s", logs.String())
	}
	st, err := store.Open(ctx, store.Config{DSN: filepath.Join(home, "hone.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := st.GetRun(ctx, run.Name)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status.Terminal() || r.LeaseOwner != "" {
		t.Errorf("run after SIGTERM: status %s, lease %q; want it re-queued with its lease free", r.Status, r.LeaseOwner)
	}
	evs, _ := st.ListEvents(ctx, run.Name, 0)
	var requeued bool
	for _, e := range evs {
		requeued = requeued || strings.Contains(e.Message, "re-queued")
	}
	if !requeued {
		t.Errorf("no re-queue event after SIGTERM: %+v", evs)
	}
}
