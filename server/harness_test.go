package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/catalog"
	"hone/client"
	"hone/modelref"
	"hone/runs"
	"hone/server"
	"hone/store"
	"hone/train"
)

// fakeTrainer stands in for train.Validate/train.Run ONLY to test the run
// state machine, the API and the store; the end-to-end tests in package
// runs use the real train.Run. It "trains" Duration.Batches steps of
// StepDelay each, checkpoints every CheckpointEvery steps, and writes a
// final model directory holding the base model's config.json. Data files
// whose name contains "fail" make Run fail; "panic" makes it panic.
type fakeTrainer struct {
	StepDelay time.Duration
}

func (f *fakeTrainer) Validate(ctx context.Context, spec train.Spec) (string, error) {
	fh, err := os.Open(spec.TrainData)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	n := 0
	for line := 1; sc.Scan(); line++ {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return "", fmt.Errorf("%s:%d: not a JSON object: %v", spec.TrainData, line, err)
		}
		if _, ok := v["messages"]; !ok {
			return "", fmt.Errorf("%s:%d: missing \"messages\"", spec.TrainData, line)
		}
		n++
	}
	return fmt.Sprintf("%d conversations", n), nil
}

func (f *fakeTrainer) Run(ctx context.Context, spec train.Spec, workDir string, obs train.Observer) (*train.Result, error) {
	base := filepath.Base(spec.TrainData)
	if strings.Contains(base, "panic") {
		panic("simulated out of memory")
	}
	if strings.Contains(base, "fail") {
		return nil, fmt.Errorf("write checkpoint: no space left on device")
	}
	total := spec.Duration.Batches
	start := 0
	if b, err := os.ReadFile(filepath.Join(workDir, "fake-progress")); err == nil {
		fmt.Sscan(string(b), &start)
		obs.OnLog(fmt.Sprintf("resuming from step %d", start))
	}
	t0 := time.Now()
	for step := start + 1; step <= total; step++ {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(f.StepDelay):
		}
		obs.OnStep(train.StepMetrics{Step: step, TotalSteps: total, Epoch: float64(step) / float64(total), Loss: 2.0 / float64(step),
			LR: spec.LearningRate, GradNorm: 1, TokensPerSec: 1000, TokensSeen: int64(step) * 64, Elapsed: time.Since(t0),
			ETA: time.Duration(total-step) * f.StepDelay})
		if spec.CheckpointEvery > 0 && step%spec.CheckpointEvery == 0 {
			dir := filepath.Join(workDir, fmt.Sprintf("checkpoint-%d", step))
			os.MkdirAll(dir, 0o755)
			os.WriteFile(filepath.Join(workDir, "fake-progress"), []byte(fmt.Sprint(step)), 0o644)
			obs.OnCheckpoint(train.Checkpoint{Step: step, Epoch: float64(step) / float64(total), Dir: dir})
			obs.OnEval(train.EvalMetrics{Step: step, Loss: 1.5, Perplexity: 4.48, TokenAccuracy: 0.5})
			var outs []train.PromptOutput
			for _, p := range spec.EvalPrompts {
				outs = append(outs, train.PromptOutput{Prompt: p, Output: "echo " + p})
			}
			if len(outs) > 0 {
				obs.OnPromptOutputs(step, outs)
			}
		}
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
	return &train.Result{ModelDir: final, Steps: total, TokensSeen: int64(total) * 64, TrainLoss: 2.0 / float64(total), DataFingerprint: "sha256:fake"}, nil
}

// tinyConfig is a Llama config the engine accepts.
const tinyConfig = `{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":256,"hidden_size":16,
"intermediate_size":32,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"rms_norm_eps":1e-5,
"max_position_embeddings":128,"tie_word_embeddings":true}`

type harness struct {
	srv   *server.Server
	url   string
	c     *client.Client
	svc   *runs.Service
	st    *store.Store
	home  string
	data  string // the data root
	model string // a tiny model directory inside the data root
}

type harnessOpts struct {
	token     string
	stepDelay time.Duration
	trainer   runs.Trainer
	// realTrainer leaves runs.Config.Trainer unset: package train itself.
	realTrainer bool
	logger      *slog.Logger // the server's; default discards
}

func newHarness(t *testing.T, st *store.Store, o harnessOpts) *harness {
	t.Helper()
	ctx := context.Background()
	home := t.TempDir()
	data := filepath.Join(home, "data")
	model := filepath.Join(data, "tiny-llama")
	if err := os.MkdirAll(model, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(model, "config.json"), []byte(tinyConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	if o.stepDelay == 0 {
		o.stepDelay = 10 * time.Millisecond
	}
	if o.trainer == nil && !o.realTrainer {
		o.trainer = &fakeTrainer{StepDelay: o.stepDelay}
	}
	h := &harness{st: st, home: home, data: data, model: model}
	var svc *runs.Service
	res, err := modelref.New(modelref.Config{HFHome: filepath.Join(home, "hf"), Catalog: cat,
		Confine: func(p string) (string, error) { return svc.Confine(p) }})
	if err != nil {
		t.Fatal(err)
	}
	svc, err = runs.New(ctx, runs.Config{Store: st, Catalog: cat, Models: res, Trainer: o.trainer, Home: home,
		DataRoots: []string{data}, Work: true, LeaseTTL: 2 * time.Second, PollEvery: 50 * time.Millisecond,
		FetchPoll: 50 * time.Millisecond, WorkerID: "test-worker"})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc.Stop(sctx)
	})
	srv, err := server.New(server.Config{Runs: svc, Catalog: cat, Token: o.token, Logger: o.logger})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	h.url = ts.URL
	h.c, err = client.New(client.Config{Server: ts.URL, Token: o.token})
	if err != nil {
		t.Fatal(err)
	}
	h.svc = svc
	if err := h.c.CreateCatalog(ctx, "main", ""); err != nil {
		t.Fatal(err)
	}
	if err := h.c.CreateCatalog(ctx, "main.demo", ""); err != nil {
		t.Fatal(err)
	}
	return h
}

// writeData writes a chat JSONL file into the data root.
func (h *harness) writeData(t *testing.T, name string, lines ...string) string {
	t.Helper()
	if len(lines) == 0 {
		lines = []string{`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}`}
	}
	p := filepath.Join(h.data, name)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (h *harness) request(t *testing.T, data string) client.CreateRunRequest {
	return client.CreateRunRequest{Model: h.model, TrainDataPath: data, RegisterTo: "main.demo.bot",
		TrainingDuration: "6ba", CheckpointEvery: 2, User: "ann", EvalPrompts: []string{"2+2?"}}
}

func (h *harness) wait(t *testing.T, name string, want ...string) *client.Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		r, err := h.c.GetRun(ctx, name)
		if err != nil {
			t.Fatalf("GetRun(%s): %v", name, err)
		}
		for _, w := range want {
			if r.Status == w {
				return r
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("run %s is %s, want %v; events: %+v", name, r.Status, want, r.Events)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) riverJobs(t *testing.T) int {
	t.Helper()
	ctx := context.Background()
	var n int
	var err error
	if db := h.st.SQLDB(); db != nil {
		err = db.QueryRowContext(ctx, "SELECT count(*) FROM river_job").Scan(&n)
	} else {
		err = h.st.PgxPool().QueryRow(ctx, "SELECT count(*) FROM river_job").Scan(&n)
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (h *harness) serverURL() string { return h.url }
