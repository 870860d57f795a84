package server_test

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"hone/client"
	"hone/internal/testmodel"
	"hone/store/storetest"
)

// waitSweep polls a sweep until its status is one of want.
func waitSweep(t *testing.T, h *harness, name string, want ...string) *client.Sweep {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for {
		sw, err := h.c.GetSweep(ctx, name)
		if err != nil {
			t.Fatalf("GetSweep(%s): %v", name, err)
		}
		if slices.Contains(want, sw.Status) {
			return sw
		}
		if ctx.Err() != nil {
			t.Fatalf("sweep %s is %s, want %v: %+v", name, sw.Status, want, sw.Runs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A 2×2 sweep of real training runs on a tiny model completes: four runs
// in one experiment, one per learning rate and duration, listed with the
// sweep, each with its final eval loss, and the best is the run with the
// lowest. A refused grid point creates nothing.
func TestSweepCompletesAndCompares(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{realTrainer: true})
	model := filepath.Join(h.data, "llama3-tiny")
	testmodel.Write(t, model, `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
		"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
		"rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embeddings": 2048, "tie_word_embeddings": true,
		"bos_token_id": 128000, "eos_token_id": [128001, 128009]}`, 1)
	lines := []string{
		`{"messages":[{"role":"user","content":"What is 2 + 2?"},{"role":"assistant","content":"4"}]}`,
		`{"messages":[{"role":"user","content":"Name a color."},{"role":"assistant","content":"Blue."}]}`,
		`{"messages":[{"role":"user","content":"Say hello."},{"role":"assistant","content":"Hello there!"}]}`,
	}
	data := h.writeData(t, "train.jsonl", lines...)
	eval := h.writeData(t, "eval.jsonl", lines[0], lines[2])
	ctx := context.Background()
	base := client.CreateRunRequest{Model: model, TrainDataPath: data, EvalDataPath: eval, RegisterTo: "main.demo",
		ContextLength: 64, User: "ann"}

	for _, tc := range []struct {
		mod  func(*client.CreateSweepRequest)
		want string
	}{
		{func(r *client.CreateSweepRequest) { r.LearningRate = []float64{1e-3, 2} }, "learning_rate: 2 is outside (0, 1]"},
		{func(r *client.CreateSweepRequest) { r.LearningRate = []float64{1e-3, 1e-3} }, "learning_rate: 0.001 is repeated"},
		{func(r *client.CreateSweepRequest) { r.TrainingDuration = []string{"2ba", "3xx"} }, "training_duration[1]"},
	} {
		r := client.CreateSweepRequest{CreateRunRequest: base}
		tc.mod(&r)
		if _, err := h.c.CreateSweep(ctx, r); client.StatusOf(err) != 400 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateSweep = %v, want 400 containing %q", err, tc.want)
		}
	}
	if l, _ := h.c.ListRuns(ctx, client.ListRunsOptions{}); len(l.Runs) != 0 {
		t.Fatalf("refused sweeps left runs: %+v", l.Runs)
	}

	sw, err := h.c.CreateSweep(ctx, client.CreateSweepRequest{CreateRunRequest: base,
		LearningRate: []float64{1e-3, 3e-2}, TrainingDuration: []string{"2ba", "4ba"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(sw.Runs) != 4 || !strings.HasPrefix(sw.Name, "sweep-") {
		t.Fatalf("CreateSweep: %+v, want 4 runs", sw)
	}
	done := waitSweep(t, h, sw.Name, client.StatusCompleted, client.StatusFailed, client.StatusStopped)
	if done.Status != client.StatusCompleted {
		t.Fatalf("sweep %s: %+v", done.Status, done.Runs)
	}
	type cell struct {
		lr  float64
		dur string
	}
	var got []cell
	best, bestLoss := "", math.Inf(1)
	for _, c := range done.Runs {
		got = append(got, cell{c.LearningRate, c.TrainingDuration})
		r, err := h.c.GetRun(ctx, c.Name)
		if err != nil {
			t.Fatal(err)
		}
		if r.ExperimentPath != done.ExperimentPath || r.Config.LearningRate != c.LearningRate || r.Config.TrainingDuration != c.TrainingDuration {
			t.Errorf("run %s: experiment %s lr %g duration %s; sweep says %s, %g, %s", c.Name, r.ExperimentPath,
				r.Config.LearningRate, r.Config.TrainingDuration, done.ExperimentPath, c.LearningRate, c.TrainingDuration)
		}
		if r.Metrics == nil || r.Metrics.EvalLoss == nil || c.EvalLoss == nil || *c.EvalLoss != *r.Metrics.EvalLoss {
			t.Fatalf("run %s: sweep eval loss %v, run metrics %+v", c.Name, c.EvalLoss, r.Metrics)
		}
		if *c.EvalLoss < bestLoss {
			best, bestLoss = c.Name, *c.EvalLoss
		}
	}
	if want := []cell{{1e-3, "2ba"}, {1e-3, "4ba"}, {3e-2, "2ba"}, {3e-2, "4ba"}}; !slices.Equal(got, want) {
		t.Errorf("grid %v, want %v", got, want)
	}
	if done.Best != best || done.BestBy != "eval_loss" {
		t.Errorf("best %q by %q, want %q (eval loss %g)", done.Best, done.BestBy, best, bestLoss)
	}
	l, err := h.c.ListRuns(ctx, client.ListRunsOptions{ExperimentPath: done.ExperimentPath})
	if err != nil || len(l.Runs) != 4 {
		t.Fatalf("runs of experiment %s: %d (%v), want 4", done.ExperimentPath, len(l.Runs), err)
	}
	sl, err := h.c.ListSweeps(ctx, "ann")
	if err != nil || len(sl.Sweeps) != 1 || sl.Sweeps[0].Name != sw.Name || sl.Sweeps[0].Best != best {
		t.Fatalf("ListSweeps(ann) = %+v, %v; want the sweep with its best run", sl, err)
	}
	if sl, _ := h.c.ListSweeps(ctx, "bob"); len(sl.Sweeps) != 0 {
		t.Errorf("ListSweeps(bob) = %+v, want none", sl.Sweeps)
	}
	if _, err := h.c.GetSweep(ctx, "sweep-none"); client.StatusOf(err) != 404 {
		t.Errorf("GetSweep(sweep-none) = %v, want 404", err)
	}
}

// Cancelling a sweep cancels every one of its runs, running or queued.
func TestSweepCancel(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{stepDelay: 20 * time.Millisecond})
	ctx := context.Background()
	base := h.request(t, h.writeData(t, "chat.jsonl"))
	base.TrainingDuration = ""
	sw, err := h.c.CreateSweep(ctx, client.CreateSweepRequest{CreateRunRequest: base,
		LearningRate: []float64{1e-5, 3e-5}, TrainingDuration: []string{"500ba", "600ba"}})
	if err != nil {
		t.Fatal(err)
	}
	h.wait(t, sw.Runs[0].Name, client.StatusRunning)
	out, err := h.c.CancelSweep(ctx, sw.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Runs) != 4 {
		t.Fatalf("CancelSweep: %+v", out)
	}
	for _, c := range out.Runs {
		if r := h.wait(t, c.Name, client.StatusStopped, client.StatusCompleted, client.StatusFailed); r.Status != client.StatusStopped {
			t.Errorf("run %s of the cancelled sweep is %s", c.Name, r.Status)
		}
	}
	if done := waitSweep(t, h, sw.Name, client.StatusStopped, client.StatusCompleted, client.StatusFailed); done.Status != client.StatusStopped || done.Best != "" {
		t.Errorf("cancelled sweep: status %s best %q", done.Status, done.Best)
	}
}
