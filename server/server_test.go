package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/client"
	"hone/server"
	"hone/store"
	"hone/store/storetest"
)

// TestAPI runs the API suite against SQLite and PostgreSQL.
func TestAPI(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store, _ string) {
		h := newHarness(t, st, harnessOpts{})
		t.Run("refused", func(t *testing.T) { testRefused(t, h) })
		t.Run("lifecycle", func(t *testing.T) { testLifecycle(t, h) })
		t.Run("failures", func(t *testing.T) { testFailures(t, h) })
		t.Run("cancel-delete", func(t *testing.T) { testCancelDelete(t, h) })
		t.Run("list", func(t *testing.T) { testList(t, h) })
		t.Run("confinement", func(t *testing.T) { testConfinement(t, h) })
		t.Run("catalog", func(t *testing.T) { testCatalog(t, h) })
	})
}

func testRefused(t *testing.T, h *harness) {
	ctx := context.Background()
	before := h.riverJobs(t)
	bad := h.writeData(t, "bad.jsonl",
		`{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`,
		`{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`,
		`{"messages": [`)
	_, err := h.c.CreateRun(ctx, h.request(t, bad))
	if client.StatusOf(err) != 400 || !strings.Contains(err.Error(), "bad.jsonl:3") {
		t.Fatalf("CreateRun(bad data) = %v (status %d), want 400 naming bad.jsonl:3", err, client.StatusOf(err))
	}
	for _, tc := range []struct {
		name string
		mod  func(*client.CreateRunRequest)
		want string
	}{
		{"duration", func(r *client.CreateRunRequest) { r.TrainingDuration = "3 weeks" }, "training_duration"},
		{"task", func(r *client.CreateRunRequest) { r.TaskType = "RLHF" }, "task_type"},
		{"schema", func(r *client.CreateRunRequest) { r.RegisterTo = "main.nope" }, "schema main.nope does not exist"},
		{"register_to", func(r *client.CreateRunRequest) { r.RegisterTo = "" }, "register_to is required"},
		{"model", func(r *client.CreateRunRequest) { r.Model = "org/absent-model" }, "not in the local Hugging Face cache"},
		{"context", func(r *client.CreateRunRequest) { r.ContextLength = 4096 }, "exceeds the model's maximum 128"},
		{"lr", func(r *client.CreateRunRequest) { r.LearningRate = -1 }, "learning_rate"},
	} {
		req := h.request(t, h.writeData(t, "ok.jsonl"))
		tc.mod(&req)
		_, err := h.c.CreateRun(ctx, req)
		if client.StatusOf(err) != 400 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateRun(%s) = %v, want 400 containing %q", tc.name, err, tc.want)
		}
	}
	// An unsupported architecture is refused with the engine's reason.
	moe := filepath.Join(h.data, "qwen2moe")
	os.MkdirAll(moe, 0o755)
	os.WriteFile(filepath.Join(moe, "config.json"), []byte(`{"model_type":"qwen2_moe","architectures":["Qwen2MoeForCausalLM"]}`), 0o644)
	req := h.request(t, h.writeData(t, "ok.jsonl"))
	req.Model = moe
	if _, err := h.c.CreateRun(ctx, req); client.StatusOf(err) != 400 || !strings.Contains(err.Error(), `"qwen2_moe" is not supported`) {
		t.Errorf("CreateRun(qwen2_moe) = %v", err)
	}
	list, err := h.c.ListRuns(ctx, client.ListRunsOptions{})
	if err != nil || len(list.Runs) != 0 {
		t.Fatalf("refused creates left runs: %+v, %v", list, err)
	}
	if after := h.riverJobs(t); after != before {
		t.Fatalf("refused creates left %d queue jobs", after-before)
	}
	// Unknown JSON fields are refused too.
	resp, err := http.Post(strings.TrimSuffix(h.serverURL(), "/")+"/api/runs", "application/json", strings.NewReader(`{"modle":"x"}`))
	if err == nil {
		if resp.StatusCode != 400 {
			t.Errorf("unknown field: status %d", resp.StatusCode)
		}
		resp.Body.Close()
	}
}

func testLifecycle(t *testing.T, h *harness) {
	ctx := context.Background()
	run, err := h.c.CreateRun(ctx, h.request(t, h.writeData(t, "chat.jsonl")))
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != client.StatusQueued || run.Validation != "1 conversations" {
		t.Fatalf("created run = %+v", run)
	}
	done := h.wait(t, run.Name, client.StatusCompleted, client.StatusFailed)
	if done.Status != client.StatusCompleted {
		t.Fatalf("run ended %s: %s; events %+v", done.Status, done.Error, done.Events)
	}
	if done.RegisteredModel != "main.demo.bot/1" || done.StartedAt == nil || done.CompletedAt == nil || done.EstimatedEndAt == nil {
		t.Fatalf("completed run = %+v", done)
	}
	if len(done.Checkpoints) != 3 || done.Checkpoints[2].Step != 6 {
		t.Fatalf("checkpoints = %+v", done.Checkpoints)
	}
	if m := done.Metrics; m == nil || m.Step != 6 || m.Loss == nil || m.TokensSeen != 384 || m.EvalLoss == nil {
		t.Fatalf("latest metrics = %+v", done.Metrics)
	}
	var types []string
	for _, e := range done.Events {
		types = append(types, e.Type)
	}
	joined := strings.Join(types, ",")
	for _, want := range []string{"PENDING", "QUEUED", "STARTING", "RUNNING", "CHECKPOINT", "EVAL", "COMPLETED"} {
		if !strings.Contains(joined, want) {
			t.Errorf("events %s lack %s", joined, want)
		}
	}
	ms, err := h.c.Metrics(ctx, run.Name)
	if err != nil || len(ms.Steps) != 6 || len(ms.Evals) != 3 || ms.Steps[5].TokensSeen != 384 {
		t.Fatalf("Metrics = %+v, %v", ms, err)
	}
	po, err := h.c.PromptOutputs(ctx, run.Name)
	if err != nil || len(po) != 3 || po[0].Output != "echo 2+2?" {
		t.Fatalf("PromptOutputs = %+v, %v", po, err)
	}
	cks, err := h.c.Checkpoints(ctx, run.Name)
	if err != nil || len(cks) != 3 {
		t.Fatalf("Checkpoints = %+v, %v", cks, err)
	}
	exps, err := h.c.Experiments(ctx)
	if err != nil || len(exps) == 0 || exps[0].Path != "/Users/ann/hone" {
		t.Fatalf("Experiments = %+v, %v", exps, err)
	}
	m, err := h.c.ShowModel(ctx, "main.demo.bot")
	if err != nil || len(m.Versions) != 1 || m.Versions[0].Run != run.Name || m.Versions[0].DataFingerprint != "sha256:fake" {
		t.Fatalf("ShowModel = %+v, %v", m, err)
	}
	if _, err := os.Stat(filepath.Join(m.Versions[0].StorageLocation, "config.json")); err != nil || !filepath.IsAbs(m.Versions[0].StorageLocation) {
		t.Fatalf("version directory %s: %v", m.Versions[0].StorageLocation, err)
	}
	evs, err := h.c.Events(ctx, run.Name, done.Events[1].ID)
	if err != nil || len(evs) != len(done.Events)-2 {
		t.Fatalf("Events(after) = %d events, %v", len(evs), err)
	}
	// A second run from the registered version (catalog reference) registers version 2.
	req := h.request(t, h.writeData(t, "chat.jsonl"))
	req.Model = "main.demo.bot/1"
	r2, err := h.c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if d := h.wait(t, r2.Name, client.StatusCompleted, client.StatusFailed); d.RegisteredModel != "main.demo.bot/2" {
		t.Fatalf("second run = %s %s %s", d.Status, d.Error, d.RegisteredModel)
	}
}

func testFailures(t *testing.T, h *harness) {
	ctx := context.Background()
	for _, tc := range []struct{ file, want string }{
		{"fail.jsonl", "no space left on device"},
		{"panic.jsonl", "simulated out of memory"},
	} {
		r, err := h.c.CreateRun(ctx, h.request(t, h.writeData(t, tc.file)))
		if err != nil {
			t.Fatal(err)
		}
		d := h.wait(t, r.Name, client.StatusFailed, client.StatusCompleted)
		last := d.Events[len(d.Events)-1]
		if d.Status != client.StatusFailed || !strings.Contains(d.Error, tc.want) || last.Type != "FAILED" || !strings.Contains(last.Message, tc.want) {
			t.Fatalf("run %s = %s %q, last event %+v", tc.file, d.Status, d.Error, last)
		}
	}
	// The service still works after a panic.
	r, err := h.c.CreateRun(ctx, h.request(t, h.writeData(t, "chat.jsonl")))
	if err != nil {
		t.Fatal(err)
	}
	h.wait(t, r.Name, client.StatusCompleted)
}

func testCancelDelete(t *testing.T, h *harness) {
	ctx := context.Background()
	req := h.request(t, h.writeData(t, "chat.jsonl"))
	req.TrainingDuration = "100000ba"
	req.ExperimentPath = "/Users/ann/cancel"
	long, err := h.c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	h.wait(t, long.Name, client.StatusRunning)
	if err := h.c.DeleteRun(ctx, long.Name); client.StatusOf(err) != 409 || !strings.Contains(err.Error(), "cancel it first") {
		t.Fatalf("DeleteRun(running) = %v, want 409", err)
	}
	// The worker is busy (concurrency 1), so this one stays queued.
	queued, err := h.c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.c.CancelRuns(ctx, client.CancelRequest{ExperimentPath: "/Users/ann/cancel"})
	if err != nil || len(res.Runs) != 2 {
		t.Fatalf("CancelRuns(experiment) = %+v, %v", res, err)
	}
	if q := h.wait(t, queued.Name, client.StatusStopped); q.StartedAt != nil {
		t.Fatalf("queued run started: %+v", q)
	}
	stopped := h.wait(t, long.Name, client.StatusStopped)
	if len(stopped.Checkpoints) == 0 {
		t.Fatalf("stopped run lost its checkpoints: %+v", stopped)
	}
	types := ""
	for _, e := range stopped.Events {
		types += e.Type + ","
	}
	if i, j := strings.Index(types, "STOPPING,"), strings.Index(types, "STOPPED,"); i < 0 || j < i {
		t.Fatalf("events %s", types)
	}
	if _, err := os.Stat(stopped.Checkpoints[0].Path); err != nil {
		t.Fatalf("checkpoint gone after stop: %v", err)
	}
	// A stopped run resumes from its checkpoint (the fake trainer logs the
	// step it resumes from), and can be stopped again.
	resumed, err := h.c.ResumeRun(ctx, long.Name)
	if err != nil || resumed.Status != client.StatusQueued {
		t.Fatalf("ResumeRun(stopped) = %+v, %v", resumed, err)
	}
	h.wait(t, long.Name, client.StatusRunning)
	if _, err := h.c.CancelRuns(ctx, client.CancelRequest{Names: []string{long.Name}}); err != nil {
		t.Fatal(err)
	}
	again := h.wait(t, long.Name, client.StatusStopped)
	var sawResume bool
	for _, e := range again.Events {
		sawResume = sawResume || strings.Contains(e.Message, "resuming from step")
	}
	if !sawResume || again.Error != "" || again.CompletedAt == nil {
		t.Fatalf("resumed run did not continue from its checkpoint: %+v", again.Events)
	}
	if _, err := h.c.ResumeRun(ctx, "nope"); client.StatusOf(err) != 404 {
		t.Fatalf("ResumeRun(unknown) = %v, want 404", err)
	}
	// Cancelling a finished run is a no-op; an unknown one is 404.
	if _, err := h.c.CancelRuns(ctx, client.CancelRequest{Names: []string{long.Name}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.CancelRuns(ctx, client.CancelRequest{Names: []string{"nope"}}); client.StatusOf(err) != 404 {
		t.Fatalf("cancel unknown = %v", err)
	}
	if err := h.c.DeleteRun(ctx, long.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.GetRun(ctx, long.Name); client.StatusOf(err) != 404 {
		t.Fatalf("GetRun(deleted) = %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.home, "runs", long.Name)); !os.IsNotExist(err) {
		t.Fatalf("run files survive delete: %v", err)
	}
}

func testList(t *testing.T, h *harness) {
	ctx := context.Background()
	mid := time.Now()
	var names []string
	for i := range 5 {
		req := h.request(t, h.writeData(t, "chat.jsonl"))
		req.User = []string{"lee", "kim"}[i%2]
		req.ValidateInputs = new(bool)
		r, err := h.c.CreateRun(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, r.Name)
	}
	var got []string
	tok := ""
	for {
		page, err := h.c.ListRuns(ctx, client.ListRunsOptions{Limit: 2, PageToken: tok, CreatedAfter: mid})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Runs) > 2 {
			t.Fatalf("page of %d > limit", len(page.Runs))
		}
		for _, r := range page.Runs {
			got = append(got, r.Name)
		}
		if tok = page.NextPageToken; tok == "" {
			break
		}
	}
	if len(got) != 5 || got[0] != names[4] || got[4] != names[0] {
		t.Fatalf("paged list = %v, want newest first of %v", got, names)
	}
	kim, err := h.c.ListRuns(ctx, client.ListRunsOptions{User: "kim", CreatedAfter: mid})
	if err != nil || len(kim.Runs) != 2 {
		t.Fatalf("ListRuns(user=kim) = %+v, %v", kim, err)
	}
	none, err := h.c.ListRuns(ctx, client.ListRunsOptions{CreatedBefore: mid, User: "lee"})
	if err != nil || len(none.Runs) != 0 {
		t.Fatalf("ListRuns(before) = %+v, %v", none, err)
	}
	for _, n := range names {
		h.wait(t, n, client.StatusCompleted)
	}
	done, err := h.c.ListRuns(ctx, client.ListRunsOptions{Status: []string{"COMPLETED"}, User: "lee"})
	if err != nil || len(done.Runs) != 3 {
		t.Fatalf("ListRuns(COMPLETED, lee) = %d, %v", len(done.Runs), err)
	}
	if _, err := h.c.ListRuns(ctx, client.ListRunsOptions{Status: []string{"DONE"}}); client.StatusOf(err) != 400 {
		t.Fatalf("bad status filter = %v", err)
	}
	if _, err := h.c.ListRuns(ctx, client.ListRunsOptions{PageToken: "garbage!"}); client.StatusOf(err) != 400 {
		t.Fatalf("bad page token = %v", err)
	}
}

func testConfinement(t *testing.T, h *harness) {
	ctx := context.Background()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret.jsonl")
	os.WriteFile(secret, []byte(`{"messages":[]}`+"\n"), 0o644)
	link := filepath.Join(h.data, "link.jsonl")
	if err := os.Symlink(secret, link); err != nil {
		t.Fatal(err)
	}
	dirLink := filepath.Join(h.data, "outdir")
	os.Symlink(outside, dirLink)
	for _, p := range []string{
		secret,
		filepath.Join(h.data, "..", "..", "..", "..", "..", "..", "..", "..", secret),
		"../../../../../../../../.." + secret,
		link,
		filepath.Join(dirLink, "secret.jsonl"),
	} {
		_, err := h.c.CreateRun(ctx, h.request(t, p))
		if client.StatusOf(err) != 400 || !strings.Contains(err.Error(), "outside the server's data roots") {
			t.Errorf("CreateRun(train_data_path=%s) = %v, want 400 outside the data roots", p, err)
		}
	}
	req := h.request(t, h.writeData(t, "chat.jsonl"))
	req.Model = filepath.Join(h.data, "..", "..")
	if _, err := h.c.CreateRun(ctx, req); client.StatusOf(err) != 400 {
		t.Errorf("model outside roots = %v", err)
	}
	// A relative path resolves inside the first root.
	req = h.request(t, "chat.jsonl")
	req.ValidateInputs = new(bool)
	r, err := h.c.CreateRun(ctx, req)
	if err != nil {
		t.Fatalf("relative path: %v", err)
	}
	h.wait(t, r.Name, client.StatusCompleted)
}

func testCatalog(t *testing.T, h *harness) {
	ctx := context.Background()
	if err := h.c.CreateCatalog(ctx, "main", ""); client.StatusOf(err) != 409 {
		t.Fatalf("CreateCatalog(dup) = %v", err)
	}
	if err := h.c.CreateCatalog(ctx, "nope.demo", ""); client.StatusOf(err) != 404 {
		t.Fatalf("CreateCatalog(schema without catalog) = %v", err)
	}
	if err := h.c.CreateCatalog(ctx, "bad name", ""); client.StatusOf(err) != 400 {
		t.Fatalf("CreateCatalog(bad) = %v", err)
	}
	m, err := h.c.SetAlias(ctx, "main.demo.bot", 1, "champion")
	if err != nil || len(m.Versions[0].Aliases) != 1 || m.Versions[0].Aliases[0] != "champion" {
		t.Fatalf("SetAlias = %+v, %v", m, err)
	}
	req := h.request(t, h.writeData(t, "chat.jsonl"))
	req.Model = "main.demo.bot@champion"
	req.RegisterTo = "main.demo"
	r, err := h.c.CreateRun(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	d := h.wait(t, r.Name, client.StatusCompleted)
	if d.RegisteredModel != "main.demo."+r.Name+"/1" {
		t.Fatalf("register_to catalog.schema gave %s", d.RegisteredModel)
	}
	if _, err := h.c.SetAlias(ctx, "main.demo.bot", 99, "x"); client.StatusOf(err) != 404 {
		t.Fatalf("SetAlias(no version) = %v", err)
	}
	if err := h.c.RemoveAlias(ctx, "main.demo.bot", "champion"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.ShowModel(ctx, "main.demo.none"); client.StatusOf(err) != 404 {
		t.Fatalf("ShowModel(none) = %v", err)
	}
	models, err := h.c.SupportedModels(ctx)
	if err != nil || len(models) < 8 || models[0].MaxContext != 131072 || !strings.HasPrefix(models[0].License, "llama3.2") {
		t.Fatalf("SupportedModels = %+v, %v", models, err)
	}
}

func TestToken(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{token: "s3cret"})
	ctx := context.Background()
	if _, err := h.c.ListRuns(ctx, client.ListRunsOptions{}); err != nil {
		t.Fatalf("with token: %v", err)
	}
	for _, tok := range []string{"", "wrong", "s3cret-but-longer"} {
		c, _ := client.New(client.Config{Server: h.serverURL(), Token: tok})
		if _, err := c.ListRuns(ctx, client.ListRunsOptions{}); client.StatusOf(err) != 401 {
			t.Errorf("token %q: %v, want 401", tok, err)
		}
	}
	long := strings.Repeat("k", server.MinTokenLen)
	for _, tc := range []struct {
		addr, token string
		want        string // "" for no error
	}{
		{"127.0.0.1:8080", "", ""}, {"localhost:8080", "", ""}, {"[::1]:8080", "", ""}, {"127.0.0.1:8080", "short", ""},
		{"0.0.0.0:8080", "", "set a bearer token"}, {":8080", "", "set a bearer token"}, {"10.1.2.3:8080", "", "set a bearer token"},
		{"0.0.0.0:8080", "t", "needs at least 16"}, {"0.0.0.0:8080", long[1:], "has 15 characters"}, {"0.0.0.0:8080", long, ""},
	} {
		err := server.CheckListen(tc.addr, tc.token)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("CheckListen(%q, %q) = %v, want %q", tc.addr, tc.token, err, tc.want)
		}
	}
}

func TestOpenAPI(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	resp, err := http.Get(h.serverURL() + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("openapi.json is not JSON: %v", err)
	}
	for _, p := range []string{"/api/runs", "/api/runs/{name}", "/api/runs/{name}/events", "/api/runs/{name}/metrics",
		"/api/runs/{name}/checkpoints", "/api/runs/{name}/prompt-outputs", "/api/runs/cancel", "/api/runs/{name}/cancel",
		"/api/experiments", "/api/models", "/api/catalog", "/api/catalog/models/{name}", "/api/catalog/models/{name}/aliases/{alias}",
		"/api/generate", "/v1/models", "/v1/chat/completions", "/v1/completions", "/api/endpoints", "/api/endpoints/{name}",
		"/v1/files", "/v1/files/{id}", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/{id}", "/v1/fine_tuning/jobs/{id}/cancel",
		"/v1/fine_tuning/jobs/{id}/events", "/v1/fine_tuning/jobs/{id}/checkpoints", "/serving-endpoints/{name}/invocations",
		"/api/sweeps", "/api/sweeps/{name}", "/api/sweeps/{name}/cancel"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("openapi.json lacks %s", p)
		}
	}
	// Every $ref names something the document defines.
	var whole any
	json.Unmarshal(b, &whole) //nolint:errcheck // parsed above
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if ref, ok := x.(string); ok && k == "$ref" {
					at := whole
					for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
						m, _ := at.(map[string]any)
						at = m[part]
					}
					if at == nil {
						t.Errorf("openapi.json: %s is not defined", ref)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(whole)
	// Growing lists are documented as paged.
	for _, p := range []string{"/api/runs/{name}/events", "/api/runs/{name}/checkpoints", "/api/runs/{name}/prompt-outputs",
		"/api/runs/{name}/metrics", "/api/experiments", "/api/endpoints"} {
		get, _ := doc.Paths[p]["get"].(map[string]any)
		if ps, _ := json.Marshal([]any{doc.Paths[p]["parameters"], get["parameters"]}); !strings.Contains(string(ps), "page_token") {
			t.Errorf("openapi.json: %s does not document page_token", p)
		}
	}
}

// TestDeadWorkerRequeued simulates a worker killed mid-run: its lease is
// taken to a dead owner and left to expire. The live worker notices it no
// longer owns the run and stops; the reaper re-queues the run under a new
// job, which resumes from the last checkpoint and completes.
func TestDeadWorkerRequeued(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store, _ string) {
		h := newHarness(t, st, harnessOpts{stepDelay: 20 * time.Millisecond})
		ctx := context.Background()
		req := h.request(t, h.writeData(t, "chat.jsonl"))
		req.TrainingDuration = "60ba"
		r, err := h.c.CreateRun(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for {
			got := h.wait(t, r.Name, client.StatusRunning)
			if len(got.Checkpoints) > 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		before, _ := st.GetRun(ctx, r.Name)
		dead, past := "dead-worker", time.Now().Add(-time.Minute)
		if _, err := st.UpdateRun(ctx, r.Name, store.RunCond{}, store.RunUpdate{LeaseOwner: &dead, LeaseUntil: &past}); err != nil {
			t.Fatal(err)
		}
		done := h.wait(t, r.Name, client.StatusCompleted, client.StatusFailed)
		if done.Status != client.StatusCompleted {
			t.Fatalf("run ended %s: %s", done.Status, done.Error)
		}
		after, _ := st.GetRun(ctx, r.Name)
		if after.JobID == before.JobID {
			t.Fatalf("run was not re-queued under a new job (job %d)", after.JobID)
		}
		var requeued, resumed bool
		for _, e := range done.Events {
			requeued = requeued || (e.Type == "QUEUED" && strings.Contains(e.Message, "dead-worker stopped responding"))
			resumed = resumed || (e.Type == "LOG" && strings.Contains(e.Message, "resuming from step"))
		}
		if !requeued || !resumed {
			t.Fatalf("requeued=%v resumed=%v; events %+v", requeued, resumed, done.Events)
		}
	})
}
