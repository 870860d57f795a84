package runs_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"hone/client"
)

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
	g, data, model := newGangProcs(t, "4s")
	c, logs, start, addr := g.c, &g.logs, g.start, g.addr
	ctx := context.Background()
	start(true)
	g.createCatalog()
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
	waitRunEvent(t, c, run.Name, 2*time.Minute, logs, func(e client.Event) bool {
		return e.Type == client.StatusQueued && strings.Contains(e.Message, "rendezvous did not complete within 4s") &&
			strings.Contains(e.Message, "no worker joined as rank 1")
	})
	start(false)

	kill := func(rank, after int) (string, int) { return g.kill(run.Name, rank, after) }
	lostEvent := func(tag, rank string) {
		t.Helper()
		waitRunEvent(t, c, run.Name, 2*time.Minute, logs, func(e client.Event) bool {
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
	// Rank 1 records leaving after its last step, concurrently with rank
	// 0 finishing the run: wait for both records.
	done = waitRanksLeft(t, c, done)
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

	g.sameAsUninterrupted(req, "the 2-node run that lost ranks")
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

// waitRanksLeft re-reads finished run r until every rank of its last
// attempt has recorded leaving (each rank records it as it stops, which
// may be after the run's status changed), for at most a minute.
func waitRanksLeft(t *testing.T, c *client.Client, r *client.Run) *client.Run {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var last int64
		for _, k := range r.Ranks {
			last = max(last, k.Attempt)
		}
		left := true
		for _, k := range r.Ranks {
			left = left && (k.Attempt != last || k.LeftAt != nil)
		}
		if left || time.Now().After(deadline) {
			return r
		}
		time.Sleep(100 * time.Millisecond)
		if n, err := c.GetRun(context.Background(), r.Name); err == nil {
			r = n
		}
	}
}
