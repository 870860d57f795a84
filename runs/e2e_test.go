package runs_test

// These tests use the real train.Validate and train.Run.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hone/catalog"
	"hone/client"
	"hone/engine"
	"hone/engine/cpu"
	"hone/internal/testassets"
	"hone/internal/testmodel"
	"hone/modelref"
	"hone/runs"
	"hone/server"
	"hone/store"
	"hone/store/storetest"
)

// tinyModel writes a random Llama model with the real Llama 3.1 tokenizer
// into dir.
func tinyModel(t *testing.T, dir string) {
	testmodel.Write(t, dir, `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 16,
		"intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
		"rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embeddings": 2048, "tie_word_embeddings": true,
		"bos_token_id": 128000, "eos_token_id": [128001, 128009]}`, 1)
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fixture lays out a data root with the tiny model and the example chat data.
func fixture(t *testing.T) (home, data, model string) {
	home = t.TempDir()
	data = filepath.Join(home, "data")
	model = filepath.Join(data, "tiny-llama")
	tinyModel(t, model)
	for _, f := range []string{"train.jsonl", "eval.jsonl"} {
		copyFile(t, filepath.Join(testassets.Root(t), "examples", "chat", f), filepath.Join(data, f))
	}
	return home, data, model
}

func request(data, model string) client.CreateRunRequest {
	return client.CreateRunRequest{Model: model, TrainDataPath: filepath.Join(data, "train.jsonl"),
		EvalDataPath: filepath.Join(data, "eval.jsonl"), RegisterTo: "main.demo.bot", TrainingDuration: "6ba",
		LearningRate: 3e-3, ContextLength: 256, BatchRows: 2, Seed: 5, CheckpointEvery: 2,
		EvalPrompts: []string{"What is 12 + 30?"}, User: "ann"}
}

func waitStatus(t *testing.T, c *client.Client, name string, timeout time.Duration, want ...string) *client.Run {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, err := c.GetRun(context.Background(), name)
		if err == nil {
			for _, w := range want {
				if r.Status == w {
					return r
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s: %v, status %v, want %v", name, err, r, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serveInProcess starts the runs service with the real trainer (home/hf as
// the Hugging Face home, data as the data root) behind an in-process HTTP
// server, creates the catalog main.demo, and returns a client of it.
func serveInProcess(t *testing.T, st *store.Store, home, data string) *client.Client {
	t.Helper()
	ctx := context.Background()
	cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	var svc *runs.Service
	res, _ := modelref.New(modelref.Config{HFHome: filepath.Join(home, "hf"), Catalog: cat,
		Confine: func(p string) (string, error) { return svc.Confine(p) }})
	svc, err = runs.New(ctx, runs.Config{Store: st, Catalog: cat, Models: res, Home: home,
		DataRoots: []string{data}, Work: true, FetchPoll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Stop(ctx) })
	return serveAPI(t, svc, cat)
}

// serveAPI serves svc's and cat's API in-process, creates the catalog
// main.demo, and returns a client of it.
func serveAPI(t *testing.T, svc *runs.Service, cat *catalog.Catalog) *client.Client {
	t.Helper()
	srv, _ := server.New(server.Config{Runs: svc, Catalog: cat})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	c, _ := client.New(client.Config{Server: ts.URL})
	for _, n := range []string{"main", "main.demo"} {
		if err := c.CreateCatalog(context.Background(), n, ""); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// TestLifecycle runs the service in-process with the real trainer, on
// SQLite and PostgreSQL: refused data names file:line and leaves nothing;
// a good run completes with metrics, checkpoints, eval-prompt outputs and a
// registered, loadable model version.
func TestLifecycle(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store, _ string) {
		ctx := context.Background()
		home, data, model := fixture(t)
		c := serveInProcess(t, st, home, data)

		bad := filepath.Join(data, "bad.jsonl")
		good, _ := os.ReadFile(filepath.Join(data, "train.jsonl"))
		lines := strings.SplitN(string(good), "\n", 3)
		os.WriteFile(bad, []byte(lines[0]+"\n"+lines[1]+"\n"+`{"messages":[{"role":"assistant","content":"x"},{"role":"user","content":"y"}]}`+"\n"), 0o644)
		req := request(data, model)
		req.TrainDataPath = bad
		if _, err := c.CreateRun(ctx, req); client.StatusOf(err) != 400 || !strings.Contains(err.Error(), "bad.jsonl:3") {
			t.Fatalf("CreateRun(bad) = %v, want 400 naming bad.jsonl:3", err)
		}
		if l, _ := c.ListRuns(ctx, client.ListRunsOptions{}); len(l.Runs) != 0 {
			t.Fatalf("refused create left runs: %+v", l.Runs)
		}

		run, err := c.CreateRun(ctx, request(data, model))
		if err != nil {
			t.Fatal(err)
		}
		done := waitStatus(t, c, run.Name, 5*time.Minute, client.StatusCompleted, client.StatusFailed)
		if done.Status != client.StatusCompleted {
			t.Fatalf("run %s: %s; events %+v", done.Status, done.Error, done.Events)
		}
		if done.Metrics == nil || done.Metrics.Step != 6 || done.Metrics.EvalLoss == nil || len(done.Checkpoints) < 3 {
			t.Fatalf("completed run: metrics %+v, checkpoints %+v", done.Metrics, done.Checkpoints)
		}
		for _, c := range done.Checkpoints {
			if _, err := os.Stat(c.Path); err != nil {
				t.Errorf("listed checkpoint %d is not on disk: %v", c.Step, err)
			}
		}
		ms, _ := c.Metrics(ctx, run.Name)
		po, _ := c.PromptOutputs(ctx, run.Name)
		if len(ms.Steps) != 6 || len(ms.Evals) < 3 || len(po) == 0 {
			t.Fatalf("tracking: %d steps, %d evals, %d prompt outputs", len(ms.Steps), len(ms.Evals), len(po))
		}
		m, err := c.ShowModel(ctx, "main.demo.bot")
		if err != nil || len(m.Versions) != 1 {
			t.Fatalf("ShowModel = %+v, %v", m, err)
		}
		if _, err := engine.Load(m.Versions[0].StorageLocation, cpu.New(0), engine.Options{}); err != nil {
			t.Fatalf("registered version does not load: %v", err)
		}
	})
}

// TestSIGKILLResume builds hone, serves with a temporary HONE_HOME, creates
// a run, SIGKILLs the server after the first checkpoint, restarts it, waits
// for COMPLETED and compares the registered weights with an uninterrupted
// run's: the safetensors files must be byte-equal.
func TestSIGKILLResume(t *testing.T) {
	home, data, model := fixture(t)
	bin := buildHone(t)
	addr := freeAddr(t)
	var logs bytes.Buffer
	serve := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--addr", addr, "--home", home, "--data-root", data, "--lease-ttl", "2s")
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	c, _ := client.New(client.Config{Server: "http://" + addr})
	ready := func() {
		for i := 0; ; i++ {
			if _, err := c.ListRuns(context.Background(), client.ListRunsOptions{Limit: 1}); err == nil {
				return
			}
			if i > 300 {
				t.Fatalf("server did not start:\n%s", logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	srv := serve()
	defer func() { srv.Process.Kill(); srv.Wait() }()
	ready()
	ctx := context.Background()
	for _, n := range []string{"main", "main.demo"} {
		if err := c.CreateCatalog(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	req := request(data, model)
	req.TrainingDuration = "12ba"
	run, err := c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		r, err := c.GetRun(ctx, run.Name)
		if err == nil && len(r.Checkpoints) > 0 {
			if r.Status == client.StatusCompleted {
				t.Fatal("run completed before it could be killed: make it longer")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint: %+v %v\n%s", r, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	srv = serve()
	ready()
	done := waitStatus(t, c, run.Name, 5*time.Minute, client.StatusCompleted, client.StatusFailed)
	if done.Status != client.StatusCompleted {
		t.Fatalf("resumed run %s: %s\n%s", done.Status, done.Error, logs.String())
	}
	// 12 steps with a checkpoint every 2 leave the newest 3 (the default).
	if n := len(done.Checkpoints); n != 3 || done.Checkpoints[2].Step != 12 {
		t.Errorf("checkpoints listed after the run: %+v, want steps 8, 10, 12", done.Checkpoints)
	}
	resumed := false
	for _, e := range done.Events {
		resumed = resumed || strings.Contains(e.Message, "resumes the run")
	}
	if !resumed {
		t.Fatalf("no resume event: %+v", done.Events)
	}
	ref, err := c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if d := waitStatus(t, c, ref.Name, 5*time.Minute, client.StatusCompleted, client.StatusFailed); d.Status != client.StatusCompleted {
		t.Fatalf("reference run %s: %s", d.Status, d.Error)
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
			t.Fatalf("%s differs between the killed-and-resumed run and the uninterrupted one (%v)", filepath.Base(f), err)
		}
	}
	fmt.Fprintln(os.Stderr, "weights equal after SIGKILL+resume")
}

// buildHone builds the hone binary for tests that run it as users do.
func buildHone(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hone")
	build := exec.Command("go", "build", "-o", bin, "hone/cmd/hone")
	build.Dir = testassets.Root(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Two machines sharing one PostgreSQL: `hone serve` and a `hone worker`
// process, each working one run at a time, split two runs between them and
// both complete and register.
func TestTwoWorkersSharePostgres(t *testing.T) {
	home, data, model := fixture(t)
	_, dsn := storetest.OpenPostgres(t)
	bin := buildHone(t)
	addr := freeAddr(t)
	var logs bytes.Buffer
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
		return cmd
	}
	common := []string{"--db", dsn, "--home", home, "--data-root", data, "--concurrency", "1"}
	start(append([]string{"serve", "--addr", addr}, common...)...)
	start(append([]string{"worker"}, common...)...)
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
	req.TrainingDuration = "10ba"
	var names []string
	for i := 0; i < 2; i++ {
		r, err := c.CreateRun(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, r.Name)
	}
	workers := map[string]bool{}
	var trail []string
	for _, n := range names {
		r := waitStatus(t, c, n, 5*time.Minute, client.StatusCompleted, client.StatusFailed)
		if r.Status != client.StatusCompleted {
			t.Fatalf("run %s: %s %s\n%s", n, r.Status, r.Error, logs.String())
		}
		for _, e := range r.Events {
			trail = append(trail, n+" "+e.Time.Format("15:04:05.000")+" "+e.Type+" "+e.Message)
			if e.Type == client.StatusStarting {
				workers[strings.Fields(strings.TrimPrefix(e.Message, "worker "))[0]] = true
			}
		}
	}
	if len(workers) != 2 {
		t.Errorf("both runs were worked by %v; want the two processes to share them:\n%s", workers, strings.Join(trail, "\n"))
	}
	m, err := c.ShowModel(ctx, "main.demo.bot")
	if err != nil || len(m.Versions) != 2 {
		t.Fatalf("ShowModel = %+v, %v", m, err)
	}
}
