package runs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/modelref"
	"hone/store"
	"hone/train"
)

// pausingTrainer trains `steps` steps, committing a checkpoint after each
// under the observer's fence as train.Run does. At step pauseAt it calls
// pause (the test stops it there, as SIGSTOP would) and, once let go,
// records one more step and a log line before committing.
type pausingTrainer struct {
	name           string // written into each checkpoint it commits
	steps, pauseAt int
	pause          func()
}

func (p *pausingTrainer) Validate(context.Context, train.Spec) (string, error) { return "ok", nil }

func (p *pausingTrainer) Run(ctx context.Context, spec train.Spec, workDir string, obs train.Observer) (*train.Result, error) {
	fence := obs.(train.Fencer)
	for step := 1; step <= p.steps; step++ {
		obs.OnStep(train.StepMetrics{Step: step, TotalSteps: p.steps, Loss: 1})
		if step == p.pauseAt && p.pause != nil {
			p.pause()
			obs.OnStep(train.StepMetrics{Step: 99, TotalSteps: p.steps, Loss: 1})
			obs.OnLog("written after the pause")
		}
		if err := fence.Fence(fmt.Sprintf("checkpoint of step %d", step)); err != nil {
			return nil, err
		}
		dir := filepath.Join(workDir, "checkpoints", fmt.Sprintf("step-%08d", step))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		state := fmt.Sprintf(`{"step":%d,"epoch":1}`, step)
		if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte(state), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "writer"), []byte(p.name), 0o644); err != nil {
			return nil, err
		}
		obs.OnCheckpoint(train.Checkpoint{Step: step, Epoch: 1, Dir: dir})
	}
	if err := fence.Fence("final model"); err != nil {
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
	return &train.Result{ModelDir: final, Steps: p.steps, TrainLoss: 1}, nil
}

// A worker stopped past its lease (its lease keeper stopped with it) while
// another worker takes the run over, then continued, can write nothing
// more for the run: its checkpoint is not committed, its records are
// refused, it registers no model and does not touch the run's outcome.
func TestStaleWorkerFenced(t *testing.T) {
	f := newFixture(t, openSQLite(t))
	ctx := context.Background()
	paused, resume := make(chan struct{}), make(chan struct{})
	stale := &pausingTrainer{name: "stale", steps: 3, pauseAt: 2, pause: func() { close(paused); <-resume }}
	f.s.tr = stale
	// The stale worker's lease keeper never ticks during the test: it is
	// stopped with its process.
	f.s.cfg.PollEvery = ttl - time.Second
	r := f.create(t)
	done := make(chan error, 1)
	go func() { done <- f.s.execute(ctx, r.JobID, 1, r.Name) }()
	<-paused

	// Its lease runs out; the reaper re-queues the run and a second worker
	// sharing the store and HONE_HOME trains it to the end.
	f.clock.Add(ttl + time.Second)
	if err := f.s.reap(ctx); err != nil {
		t.Fatal(err)
	}
	requeued := f.get(t, r.Name)
	if requeued.JobID == r.JobID || requeued.Status != store.StatusQueued {
		t.Fatalf("after the lease ran out: %s job %d; want QUEUED with a new job", requeued.Status, requeued.JobID)
	}
	other := f.second(t, "other", &pausingTrainer{name: "other", steps: 3})
	if err := other.execute(ctx, requeued.JobID, 1, r.Name); err != nil {
		t.Fatal(err)
	}
	after := f.get(t, r.Name)
	if after.Status != store.StatusCompleted || after.ModelVersion != "main.demo.bot/1" {
		t.Fatalf("taken-over run: %s %q (%s); want COMPLETED as main.demo.bot/1", after.Status, after.ModelVersion, after.Error)
	}
	evBefore, _ := f.st.ListEvents(ctx, r.Name, 0)

	// The stale worker continues.
	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := f.get(t, r.Name)
	if got.Status != store.StatusCompleted || got.ModelVersion != "main.demo.bot/1" || got.LeaseEpoch != after.LeaseEpoch {
		t.Fatalf("the stale worker changed the run: %s %q epoch %d (was %d)", got.Status, got.ModelVersion, got.LeaseEpoch, after.LeaseEpoch)
	}
	evs, _ := f.st.ListEvents(ctx, r.Name, 0)
	if len(evs) != len(evBefore) {
		t.Errorf("the stale worker added events: %+v", evs[len(evBefore):])
	}
	for _, e := range evs {
		if strings.Contains(e.Message, "written after the pause") {
			t.Errorf("stale record stored: %+v", e)
		}
	}
	if steps, _ := f.st.ListSteps(ctx, r.Name, 0); len(steps) != 3 {
		t.Errorf("steps stored %+v, want the new worker's 3 (no step 99 from the stale one)", steps)
	}
	cks, _ := f.st.ListCheckpoints(ctx, r.Name)
	disk, _ := train.Checkpoints(filepath.Join(f.s.runDir(r.Name), "work"))
	if len(cks) != len(disk) || len(cks) != 3 {
		t.Errorf("checkpoints listed %+v, on disk %+v; want the same 3", cks, disk)
	}
	for _, c := range disk {
		if w, _ := os.ReadFile(filepath.Join(c.Dir, "writer")); string(w) != "other" {
			t.Errorf("checkpoint of step %d committed by the %s worker after it lost the run", c.Step, w)
		}
	}
	vs, err := f.s.cat.Show(ctx, "main.demo.bot")
	if err != nil || len(vs) != 1 {
		t.Fatalf("catalog: %+v, %v; want one version", vs, err)
	}
	// The fence refused the stale commit by its token.
	stop := make(chan struct{})
	k := &leaseKeeper{s: f.s, name: r.Name, jobID: r.JobID, epoch: 1, cancel: func(error) { close(stop) }, validUntil: f.clock.Now().Add(ttl)}
	if err := f.s.fence(k); !errors.Is(err, errLeaseLost) {
		t.Errorf("fence of epoch 1 on a run at epoch %d = %v, want errLeaseLost", got.LeaseEpoch, err)
	}
}

// second is another worker (id) on the fixture's store, catalog and home.
func (f *fixture) second(t *testing.T, id string, tr Trainer) *Service {
	t.Helper()
	cfg := f.s.cfg
	cfg.WorkerID, cfg.Trainer = id, tr
	cfg.PollEvery = 5 * time.Millisecond
	var s *Service
	res, err := modelref.New(modelref.Config{HFHome: filepath.Join(cfg.Home, "hf"), Catalog: cfg.Catalog,
		Confine: func(p string) (string, error) { return s.Confine(p) }})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Models = res
	s, err = New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
