package runs

// Unit tests of the run service's state machine with a scripted trainer and
// an injected clock: leases, expiry, stale-job fencing, the reaper,
// cancel/resume/delete transitions and path confinement at start. The real
// trainer is exercised by e2e_test.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hone/catalog"
	"hone/client"
	"hone/modelref"
	"hone/store"
	"hone/store/storetest"
	"hone/train"
)

// fakeClock is the service's clock; tests move it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// scriptTrainer trains `steps` steps instantly, saving a checkpoint after
// each, and writes a final model holding the base config. hold, when set,
// is called where a real trainer spends long (final phase or stop
// checkpoint) with the phase's name; it returns when the test lets it.
type scriptTrainer struct {
	steps    int
	stopAt   int // steps after which it waits for ctx to be cancelled; 0 never
	hold     func(phase string)
	runCalls int
	mu       sync.Mutex
}

func (f *scriptTrainer) Validate(ctx context.Context, spec train.Spec) (string, error) {
	_, err := os.Stat(spec.TrainData)
	return "ok", err
}

func (f *scriptTrainer) Run(ctx context.Context, spec train.Spec, workDir string, obs train.Observer) (*train.Result, error) {
	f.mu.Lock()
	f.runCalls++
	f.mu.Unlock()
	for step := 1; step <= f.steps; step++ {
		obs.OnStep(train.StepMetrics{Step: step, TotalSteps: f.steps, Loss: 1})
		if step == f.stopAt {
			<-ctx.Done()
			if f.hold != nil {
				f.hold("stop checkpoint")
			}
			if err := obs.(train.Fencer).Fence("stop checkpoint"); err != nil {
				return nil, err
			}
			obs.OnCheckpoint(train.Checkpoint{Step: step, Dir: filepath.Join(workDir, fmt.Sprint(step))})
			return nil, ctx.Err()
		}
	}
	if f.hold != nil {
		f.hold("final")
	}
	if err := obs.(train.Fencer).Fence("final model"); err != nil {
		return nil, err
	}
	final := filepath.Join(workDir, "final")
	if err := os.MkdirAll(final, 0o755); err != nil {
		return nil, err
	}
	cfg, err := os.ReadFile(filepath.Join(spec.ModelDir, "config.json"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(final, "config.json"), cfg, 0o644); err != nil {
		return nil, err
	}
	return &train.Result{ModelDir: final, Steps: f.steps, TrainLoss: 1}, nil
}

func (f *scriptTrainer) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runCalls
}

const tinyConfig = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":256,"hidden_size":16,
"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"rms_norm_eps":1e-5,
"max_position_embeddings":128,"tie_word_embeddings":true}`

const ttl = 30 * time.Second

type fixture struct {
	s       *Service
	st      *store.Store
	clock   *fakeClock
	tr      *scriptTrainer
	data    string // the data root
	model   string
	outside string // a directory outside the data root
}

// newFixture builds a service that does not work jobs by itself: tests
// call execute and reap directly.
func newFixture(t *testing.T, st *store.Store) *fixture {
	t.Helper()
	ctx := context.Background()
	home := t.TempDir()
	f := &fixture{st: st, clock: &fakeClock{t: time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)}, tr: &scriptTrainer{steps: 3},
		data: filepath.Join(home, "data"), outside: t.TempDir()}
	f.model = filepath.Join(f.data, "tiny")
	if err := os.MkdirAll(f.model, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.model, "config.json"), tinyConfig)
	write(t, filepath.Join(f.model, "tokenizer.json"), "{}")
	write(t, filepath.Join(f.data, "train.jsonl"), `{"messages":[]}`)
	cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"main", "main.demo"} {
		if n == "main" {
			err = cat.CreateCatalog(ctx, n, "")
		} else {
			err = cat.CreateSchema(ctx, n, "")
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	res, err := modelref.New(modelref.Config{HFHome: filepath.Join(home, "hf"), Catalog: cat,
		Confine: func(p string) (string, error) { return f.s.Confine(p) }})
	if err != nil {
		t.Fatal(err)
	}
	f.s, err = New(ctx, Config{Store: st, Catalog: cat, Models: res, Trainer: f.tr, Home: home, DataRoots: []string{f.data},
		Clock: f.clock.Now, LeaseTTL: ttl, PollEvery: 5 * time.Millisecond, WorkerID: "me"})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func write(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// create makes a QUEUED run and returns its row.
func (f *fixture) create(t *testing.T) *store.Run {
	t.Helper()
	r, err := f.s.Create(context.Background(), client.CreateRunRequest{Model: f.model, TrainDataPath: "train.jsonl",
		RegisterTo: "main.demo.bot", TrainingDuration: "3ba"})
	if err != nil {
		t.Fatal(err)
	}
	return f.get(t, r.Name)
}

func (f *fixture) get(t *testing.T, name string) *store.Run {
	t.Helper()
	r, err := f.st.GetRun(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// setLease puts the run in status held by owner until `until`.
func (f *fixture) setLease(t *testing.T, name string, status store.RunStatus, owner string, until time.Time) {
	t.Helper()
	if _, err := f.st.UpdateRun(context.Background(), name, store.RunCond{},
		store.RunUpdate{Status: &status, LeaseOwner: &owner, LeaseUntil: &until}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) lastEvent(t *testing.T, name string) store.Event {
	t.Helper()
	evs, err := f.st.ListEvents(context.Background(), name, 0)
	if err != nil || len(evs) == 0 {
		t.Fatalf("events of %s: %v, %v", name, evs, err)
	}
	return evs[len(evs)-1]
}

func TestExecuteCompletesAndRegisters(t *testing.T) {
	f := newFixture(t, openSQLite(t))
	r := f.create(t)
	if err := f.s.execute(context.Background(), r.JobID, 1, r.Name); err != nil {
		t.Fatal(err)
	}
	got := f.get(t, r.Name)
	if got.Status != store.StatusCompleted || got.ModelVersion != "main.demo.bot/1" || got.LeaseOwner != "" {
		t.Fatalf("after execute: status %s, version %q, lease %q; want COMPLETED, main.demo.bot/1, free", got.Status, got.ModelVersion, got.LeaseOwner)
	}
	if !got.StartedAt.Equal(f.clock.Now().Truncate(time.Microsecond)) {
		t.Errorf("started_at %v, want the injected clock's %v", got.StartedAt, f.clock.Now())
	}
}

// A job that no longer owns its run (the reaper gave the run a new job)
// does nothing: no training, no state change.
func TestStaleJobFenced(t *testing.T) {
	f := newFixture(t, openSQLite(t))
	r := f.create(t)
	if err := f.s.execute(context.Background(), r.JobID+1000, 1, r.Name); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, r.Name); got.Status != store.StatusQueued || got.LeaseOwner != "" || f.tr.calls() != 0 {
		t.Fatalf("stale job: status %s, lease %q, trainer calls %d; want QUEUED, free, 0", got.Status, got.LeaseOwner, f.tr.calls())
	}
}

// A live lease of another worker keeps a job off the run until it
// expires by the clock; then the job claims it.
func TestLeaseExpiry(t *testing.T) {
	f := newFixture(t, openSQLite(t))
	r := f.create(t)
	f.setLease(t, r.Name, store.StatusStarting, "other", f.clock.Now().Add(ttl))
	err := f.s.execute(context.Background(), r.JobID, 1, r.Name)
	if err == nil || !strings.Contains(fmt.Sprintf("%T", err), "Snooze") || f.tr.calls() != 0 {
		t.Fatalf("execute under a live lease = %v (%T), %d trainer calls; want a snooze and no training", err, err, f.tr.calls())
	}
	f.clock.Add(ttl + time.Second)
	if err := f.s.execute(context.Background(), r.JobID, 2, r.Name); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, r.Name); got.Status != store.StatusCompleted || f.tr.calls() != 1 {
		t.Fatalf("after the lease expired: %s with %d trainer calls, want COMPLETED after 1", got.Status, f.tr.calls())
	}
}

func TestReaperRequeuesExpired(t *testing.T) {
	f := newFixture(t, openSQLite(t))
	ctx := context.Background()
	r := f.create(t)
	f.setLease(t, r.Name, store.StatusRunning, "gone-worker", f.clock.Now().Add(ttl))
	if err := f.s.reap(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, r.Name); got.Status != store.StatusRunning || got.JobID != r.JobID {
		t.Fatalf("reaped a live lease: %s job %d", got.Status, got.JobID)
	}
	f.clock.Add(ttl + time.Second)
	if err := f.s.reap(ctx); err != nil {
		t.Fatal(err)
	}
	got := f.get(t, r.Name)
	if got.Status != store.StatusQueued || got.JobID == r.JobID || got.LeaseOwner != "" {
		t.Fatalf("after expiry: %s job %d (was %d) lease %q; want QUEUED with a new job, lease free", got.Status, got.JobID, r.JobID, got.LeaseOwner)
	}
	if e := f.lastEvent(t, r.Name); !strings.Contains(e.Message, "gone-worker stopped responding") {
		t.Errorf("event %q does not say which worker stopped", e.Message)
	}
	// The old job is fenced off now.
	if err := f.s.execute(ctx, r.JobID, 2, r.Name); err != nil || f.tr.calls() != 0 {
		t.Fatalf("old job after the re-queue: %v, %d trainer calls", err, f.tr.calls())
	}
}

// The reaper's update compares and sets the lease as it read it: a worker
// that renewed between the reaper's read and its update keeps its run.
func TestReaperSparesRenewedLease(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store, _ string) { reaperSparesRenewedLease(t, st) })
}

func reaperSparesRenewedLease(t *testing.T, st *store.Store) {
	f := newFixture(t, st)
	ctx := context.Background()
	r := f.create(t)
	f.setLease(t, r.Name, store.StatusRunning, "slow-worker", f.clock.Now().Add(ttl))
	f.clock.Add(ttl + time.Second)
	orphans, err := f.s.orphans(ctx)
	if err != nil || len(orphans) != 1 {
		t.Fatalf("orphans = %+v, %v; want the expired run", orphans, err)
	}
	f.setLease(t, r.Name, store.StatusRunning, "slow-worker", f.clock.Now().Add(ttl)) // renewed
	if err := f.s.requeue(ctx, orphans[0]); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, r.Name); got.Status != store.StatusRunning || got.JobID != r.JobID || got.LeaseOwner != "slow-worker" {
		t.Fatalf("renewed run was reaped: %s job %d owner %q", got.Status, got.JobID, got.LeaseOwner)
	}
	// Likewise for a run that was stopping.
	f.setLease(t, r.Name, store.StatusStopping, "slow-worker", f.clock.Now().Add(-time.Second))
	orphans, _ = f.s.orphans(ctx)
	f.setLease(t, r.Name, store.StatusStopping, "slow-worker", f.clock.Now().Add(ttl))
	if err := f.s.requeue(ctx, orphans[0]); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, r.Name); got.Status != store.StatusStopping {
		t.Fatalf("renewed stopping run was stopped by the reaper: %s", got.Status)
	}
	f.clock.Add(ttl + time.Second)
	if err := f.s.reap(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.get(t, r.Name); got.Status != store.StatusStopped {
		t.Fatalf("expired stopping run: %s, want STOPPED", got.Status)
	}
}

// The worker's lease is renewed for as long as the job works the run: also
// while the trainer saves a stop checkpoint after a cancel or a shutdown,
// and through a long final phase. Meanwhile the clock passes several lease
// periods and the reaper must find nothing to take.
func TestLeaseHeldThroughSlowPhases(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stopAt int
		stop   func(f *fixture, name string, shutdown context.CancelFunc)
		want   store.RunStatus
		event  string
	}{
		{"cancel", 2, func(f *fixture, name string, _ context.CancelFunc) {
			if _, err := f.s.Cancel(context.Background(), client.CancelRequest{Names: []string{name}}); err != nil {
				panic(err)
			}
		}, store.StatusStopped, "cancelled at step 2; its checkpoint is kept"},
		{"shutdown", 2, func(_ *fixture, _ string, shutdown context.CancelFunc) { shutdown() },
			store.StatusRunning, "shut down at step 2; its checkpoint is kept"},
		{"final phase", 0, func(*fixture, string, context.CancelFunc) {}, store.StatusCompleted, "registered as main.demo.bot/1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, openSQLite(t))
			held, release := make(chan string, 1), make(chan struct{})
			f.tr.stopAt, f.tr.hold = tc.stopAt, func(phase string) { held <- phase; <-release }
			r := f.create(t)
			jobCtx, shutdown := context.WithCancel(context.Background())
			defer shutdown()
			done := make(chan error, 1)
			go func() { done <- f.s.execute(jobCtx, r.JobID, 1, r.Name) }()
			if tc.stopAt > 0 {
				waitFor(t, "the run to be RUNNING", func() bool { return f.get(t, r.Name).Status == store.StatusRunning })
				tc.stop(f, r.Name, shutdown)
			}
			<-held
			for i := range 4 {
				f.clock.Add(ttl / 2)
				waitFor(t, fmt.Sprintf("lease renewal %d", i+1), func() bool {
					return f.get(t, r.Name).LeaseUntil.After(f.clock.Now().Add(ttl / 2))
				})
				if err := f.s.reap(context.Background()); err != nil {
					t.Fatal(err)
				}
				if got := f.get(t, r.Name); got.LeaseOwner != "me" || got.JobID != r.JobID {
					t.Fatalf("the reaper took the run from its live worker: %s job %d owner %q", got.Status, got.JobID, got.LeaseOwner)
				}
			}
			close(release)
			<-done
			got := f.get(t, r.Name)
			if got.Status != tc.want || got.LeaseOwner != "" {
				t.Fatalf("run ended %s with lease %q, want %s and free", got.Status, got.LeaseOwner, tc.want)
			}
			if e := f.lastEvent(t, r.Name); !strings.Contains(e.Message, tc.event) {
				t.Errorf("last event %q, want it to say %q", e.Message, tc.event)
			}
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestDeadLocalWorker(t *testing.T) {
	f := newFixture(t, openSQLite(t))
	host, _ := os.Hostname()
	f.s.nsTag = "0a1b2c3d"
	dead := deadPID(t)
	alive := os.Getpid()
	for _, tc := range []struct {
		owner string
		want  bool
	}{
		{fmt.Sprintf("%s-%d-abcdef-0a1b2c3d", host, dead), true},
		{fmt.Sprintf("%s-%d-abcdef-0a1b2c3d", host, alive), false},
		// Same hostname, another PID namespace (a container): its pids are
		// not ours to judge.
		{fmt.Sprintf("%s-%d-abcdef-ffffffff", host, dead), false},
		{fmt.Sprintf("%s-%d-abcdef", host, dead), false}, // no namespace: unknown
		{fmt.Sprintf("other-host-%d-abcdef-0a1b2c3d", dead), false},
	} {
		if got := f.s.deadLocalWorker(tc.owner); got != tc.want {
			t.Errorf("deadLocalWorker(%q) = %v, want %v", tc.owner, got, tc.want)
		}
	}
	if id := workerID(namespaceTag()); !strings.HasSuffix(id, "-"+namespaceTag()) || namespaceTag() == "" {
		t.Errorf("workerID %q does not end with this namespace's tag %q", id, namespaceTag())
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	return p.Pid
}

func TestCancelResumeDeleteTransitions(t *testing.T) {
	f := newFixture(t, openSQLite(t))
	ctx := context.Background()
	r := f.create(t)
	cancel := func(name string) {
		if _, err := f.s.Cancel(ctx, client.CancelRequest{Names: []string{name}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.s.Resume(ctx, r.Name); !errors.Is(err, ErrState) {
		t.Fatalf("Resume(QUEUED) = %v, want ErrState", err)
	}
	if err := f.s.Delete(ctx, r.Name); !errors.Is(err, ErrState) {
		t.Fatalf("Delete(QUEUED) = %v, want ErrState", err)
	}
	cancel(r.Name) // QUEUED → STOPPED at once
	if got := f.get(t, r.Name); got.Status != store.StatusStopped || got.CompletedAt.IsZero() {
		t.Fatalf("cancelled queued run: %s, completed %v", got.Status, got.CompletedAt)
	}
	if _, err := f.s.Resume(ctx, r.Name); err != nil {
		t.Fatal(err)
	}
	resumed := f.get(t, r.Name)
	if resumed.Status != store.StatusQueued || resumed.JobID == r.JobID || !resumed.CompletedAt.IsZero() {
		t.Fatalf("resumed run: %s job %d (was %d) completed %v", resumed.Status, resumed.JobID, r.JobID, resumed.CompletedAt)
	}
	f.setLease(t, r.Name, store.StatusRunning, "me", f.clock.Now().Add(ttl))
	cancel(r.Name) // RUNNING → STOPPING; its worker finishes the stop
	if got := f.get(t, r.Name); got.Status != store.StatusStopping {
		t.Fatalf("cancelled running run: %s, want STOPPING", got.Status)
	}
	cancel(r.Name) // again: no change
	if err := f.s.Delete(ctx, r.Name); !errors.Is(err, ErrState) {
		t.Fatalf("Delete(STOPPING) = %v, want ErrState", err)
	}
	// A job that starts on a STOPPING run stops it without training.
	if err := f.s.execute(ctx, resumed.JobID, 1, r.Name); err != nil || f.tr.calls() != 0 {
		t.Fatalf("execute on STOPPING: %v, %d trainer calls", err, f.tr.calls())
	}
	if got := f.get(t, r.Name); got.Status != store.StatusStopped {
		t.Fatalf("after execute on STOPPING: %s", got.Status)
	}
	if err := f.s.Delete(ctx, r.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.GetRun(ctx, r.Name); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted run still readable: %v", err)
	}
}

// Resume and Delete racing on one STOPPED run never leave a queue job for
// a deleted run, nor a QUEUED run without its job.
func TestResumeDeleteRace(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store, _ string) {
		f := newFixture(t, st)
		ctx := context.Background()
		deleted, resumed := 0, 0
		for i := range 25 {
			r := f.create(t)
			if _, err := f.s.Cancel(ctx, client.CancelRequest{Names: []string{r.Name}}); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var rerr, derr error
			wg.Add(2)
			go func() { defer wg.Done(); _, rerr = f.s.Resume(ctx, r.Name) }()
			go func() { defer wg.Done(); derr = f.s.Delete(ctx, r.Name) }()
			wg.Wait()
			live := liveJobs(t, st, r.Name)
			got, err := st.GetRun(ctx, r.Name)
			switch {
			case errors.Is(err, store.ErrNotFound):
				deleted++
				if len(live) != 0 {
					t.Fatalf("iteration %d: run deleted (resume: %v) but jobs %v are queued for it", i, rerr, live)
				}
			case err != nil:
				t.Fatal(err)
			default:
				resumed++
				if derr == nil || got.Status != store.StatusQueued || len(live) != 1 || live[0] != got.JobID {
					t.Fatalf("iteration %d: run %s job %d, live jobs %v, delete %v, resume %v", i, got.Status, got.JobID, live, derr, rerr)
				}
			}
		}
		t.Logf("%d deleted, %d resumed", deleted, resumed)
	})
}

// liveJobs lists the ids of the run's queue jobs that a worker would still
// work.
func liveJobs(t *testing.T, st *store.Store, run string) []int64 {
	t.Helper()
	q := `SELECT id, args FROM river_job WHERE state IN ('available', 'scheduled', 'retryable', 'running', 'pending')`
	var ids []int64
	add := func(id int64, raw []byte) {
		var a TrainArgs
		if err := json.Unmarshal(raw, &a); err != nil {
			t.Fatal(err)
		}
		if a.Run == run {
			ids = append(ids, id)
		}
	}
	ctx := context.Background()
	if st.Dialect() == store.Postgres {
		rows, err := st.PgxPool().Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var raw []byte
			if err := rows.Scan(&id, &raw); err != nil {
				t.Fatal(err)
			}
			add(id, raw)
		}
		return ids
	}
	// riversqlite keeps args as SQLite's binary JSON.
	rows, err := st.SQLDB().QueryContext(ctx, strings.Replace(q, "args", "json(args)", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var raw []byte
		if err := rows.Scan(&id, &raw); err != nil {
			t.Fatal(err)
		}
		add(id, raw)
	}
	return ids
}

func openSQLite(t *testing.T) *store.Store {
	st, _ := storetest.OpenSQLite(t)
	return st
}

// A data file replaced by a symlink out of the data roots after the run was
// queued fails the run when its worker starts it, naming the path; so does
// a model directory whose file became such a symlink. Neither is trained.
func TestConfinedAgainWhenStarted(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		swap        func(f *fixture) string // returns the swapped path
	}{
		{"data file", "train_data_path", func(f *fixture) string { return filepath.Join(f.data, "train.jsonl") }},
		{"model file", "model", func(f *fixture) string { return filepath.Join(f.model, "config.json") }},
		{"model dir", "model", func(f *fixture) string { return f.model }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, openSQLite(t))
			r := f.create(t)
			p := tc.swap(f)
			secret := filepath.Join(f.outside, filepath.Base(p))
			if err := os.Rename(p, secret); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(secret, p); err != nil {
				t.Fatal(err)
			}
			if err := f.s.execute(context.Background(), r.JobID, 1, r.Name); err != nil {
				t.Fatal(err)
			}
			got := f.get(t, r.Name)
			if got.Status != store.StatusFailed || !strings.Contains(got.Error, tc.field) || !strings.Contains(got.Error, p) ||
				!strings.Contains(got.Error, "outside the server's data roots") {
				t.Fatalf("run %s, error %q; want FAILED naming %s %s outside the data roots", got.Status, got.Error, tc.field, p)
			}
			if f.tr.calls() != 0 {
				t.Fatal("the trainer ran on a path outside the data roots")
			}
		})
	}
}

// A model directory in the data roots whose tokenizer.json or weights are
// symlinks out of the roots is refused at creation, naming the file.
func TestModelFilesConfinedAtCreate(t *testing.T) {
	f := newFixture(t, openSQLite(t))
	outside := filepath.Join(f.outside, "model.safetensors")
	write(t, outside, "weights")
	link := filepath.Join(f.model, "model.safetensors")
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	_, err := f.s.Create(context.Background(), client.CreateRunRequest{Model: f.model, TrainDataPath: "train.jsonl",
		RegisterTo: "main.demo.bot"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), link) {
		t.Fatalf("Create with %s -> %s = %v; want ErrInvalid naming the file", link, outside, err)
	}
	// Inside the roots a symlink is fine.
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.data, "w.safetensors"), "weights")
	if err := os.Symlink(filepath.Join(f.data, "w.safetensors"), link); err != nil {
		t.Fatal(err)
	}
	f.create(t)
}

func TestDefaultDataRoots(t *testing.T) {
	home, other := t.TempDir(), t.TempDir()
	hone := filepath.Join(home, ".hone")
	t.Setenv("HOME", home)
	for _, tc := range []struct {
		wd   string
		want []string
	}{
		{home, []string{filepath.Join(hone, "data")}},
		{"/", []string{filepath.Join(hone, "data")}},
		{other, []string{other, filepath.Join(hone, "data")}},
	} {
		t.Chdir(tc.wd)
		got, err := DefaultDataRoots(hone)
		if err != nil || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("DefaultDataRoots from %s = %v, %v; want %v", tc.wd, got, err, tc.want)
		}
	}
	if fi, err := os.Stat(filepath.Join(hone, "data")); err != nil || !fi.IsDir() {
		t.Errorf("HONE_HOME/data was not created: %v", err)
	}
}
