package server_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"hone/client"
	"hone/internal/testassets"
	"hone/internal/testmodel"
	"hone/store/storetest"
)

// TestOpenAIFineTuning runs the OpenAI fine-tuning flow with the official
// openai npm client against hone with its real trainer: upload, create,
// follow to succeeded, events, checkpoints, chat with the fine-tuned
// model, cancel, and the refusals. What the client saw is checked against
// the native API's view of the same run and model.
func TestOpenAIFineTuning(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required for the OpenAI client test (scripts/install-deps.sh installs it): %v", err)
	}
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{token: testToken, realTrainer: true})
	model := filepath.Join(h.data, "tiny-llama3")
	testmodel.Write(t, model, testmodel.Llama3Tiny, 7)
	trainFile := filepath.Join(testassets.Root(t), "examples", "chat", "train.jsonl")
	evalFile := filepath.Join(testassets.Root(t), "examples", "chat", "eval.jsonl")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "testdata/openai_finetune.mjs")
	cmd.Env = append(os.Environ(), "OPENAI_MODULE="+testassets.Path(t, "openai/package/index.mjs"), "HONE_BASE_URL="+h.url+"/v1",
		"HONE_TOKEN="+testToken, "HONE_MODEL="+model, "HONE_TRAIN="+trainFile, "HONE_EVAL="+evalFile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("node testdata/openai_finetune.mjs: %v\n%s", err, stderr.String())
	}
	t.Logf("openai client saw: %s", stdout)
	type failure struct {
		Status                     int
		Code, Type, Param, Message string
		File                       string
	}
	type job struct {
		ID, Object, Status, Model string
		TrainingFile              string  `json:"training_file"`
		ValidationFile            *string `json:"validation_file"`
		FineTunedModel            *string `json:"fine_tuned_model"`
		Seed                      int
		Suffix                    *string         `json:"user_provided_suffix"`
		TrainedTokens             *int64          `json:"trained_tokens"`
		FinishedAt                *int64          `json:"finished_at"`
		Hyperparameters           map[string]any  `json:"hyperparameters"`
		Error                     json.RawMessage `json:"error"`
	}
	var got struct {
		Train, Retrieved struct {
			ID, Object, Filename, Purpose string
			Bytes                         int64
		}
		Files                        []string
		Created, Finished, Cancelled job
		Statuses                     []string
		Followed                     []struct{ ID, Object, Level, Message, Type string }
		Events                       []string
		Checkpoints                  []struct {
			ID, Object, Job string
			Step            int
			Metrics         map[string]float64
		}
		Chat    *struct{ Model, Text, Finish string }
		Jobs    []string
		Refused map[string]failure
		Deleted struct {
			ID      string
			Deleted bool
		}
		AfterDelete failure
	}
	if err := json.Unmarshal(stdout, &got); err != nil {
		t.Fatalf("node printed %s: %v", stdout, err)
	}

	raw, _ := os.ReadFile(trainFile)
	if f := got.Train; !strings.HasPrefix(f.ID, "file-") || f.Object != "file" || f.Bytes != int64(len(raw)) || f.Filename != "train.jsonl" ||
		f.Purpose != "fine-tune" || got.Retrieved != got.Train {
		t.Errorf("uploaded file = %+v, retrieved %+v; want %d bytes of train.jsonl for fine-tune", f, got.Retrieved, len(raw))
	}
	if len(got.Files) != 2 || !slices.Contains(got.Files, got.Train.ID) {
		t.Errorf("files.list() = %v, want both uploads", got.Files)
	}
	c := got.Created
	if !strings.HasPrefix(c.ID, "ftjob-") || c.Object != "fine_tuning.job" || c.Status != "queued" || c.Model != model ||
		c.TrainingFile != got.Train.ID || c.ValidationFile == nil || c.Seed != 5 || c.Suffix == nil || *c.Suffix != "demo" ||
		c.Hyperparameters["n_epochs"] != 1.0 || c.Hyperparameters["batch_size"] != 8.0 {
		t.Errorf("created job = %+v", c)
	}
	// The native API's view of the same run.
	run, err := h.c.GetRun(ctx, strings.TrimPrefix(c.ID, "ftjob-"))
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != client.StatusCompleted || run.Config.TrainingDuration != "1ep" || run.Config.GradAccum != 8 ||
		run.Config.EvalDataPath == "" || run.Config.TaskType != client.TaskChatCompletion {
		t.Fatalf("native run = %s %+v (error %s)", run.Status, run.Config, run.Error)
	}
	f := got.Finished
	if f.Status != "succeeded" || f.FineTunedModel == nil || *f.FineTunedModel != "main.openai.demo/1" || f.FinishedAt == nil ||
		f.TrainedTokens == nil || *f.TrainedTokens != run.Metrics.TokensSeen || string(f.Error) != "null" {
		t.Errorf("finished job = %+v, want succeeded as main.openai.demo/1 with %d trained tokens", f, run.Metrics.TokensSeen)
	}
	if run.RegisteredModel != "main.openai.demo/1" {
		t.Errorf("native run registered %q", run.RegisteredModel)
	}
	if last := got.Statuses[len(got.Statuses)-1]; last != "succeeded" || !slices.Contains(got.Statuses, "running") && !slices.Contains(got.Statuses, "queued") {
		t.Errorf("statuses seen while following = %v", got.Statuses)
	}
	// Every native event was followed, once, oldest first.
	if len(got.Followed) != len(run.Events) {
		t.Errorf("followed %d events, the run has %d", len(got.Followed), len(run.Events))
	}
	for i, e := range got.Followed {
		if i < len(run.Events) && (e.Type != run.Events[i].Type || e.Message != run.Events[i].Message || e.Object != "fine_tuning.job.event") {
			t.Errorf("event %d = %+v, native %+v", i, e, run.Events[i])
		}
	}
	if n := len(got.Followed); n == 0 || got.Followed[n-1].Type != client.StatusCompleted {
		t.Errorf("last followed event = %+v, want COMPLETED", got.Followed)
	}
	// Paging by two, newest first, reaches every event exactly once.
	want := []string{}
	for i := len(got.Followed) - 1; i >= 0; i-- {
		want = append(want, got.Followed[i].ID)
	}
	if !slices.Equal(got.Events, want) {
		t.Errorf("events paged by 2 = %v, want %v", got.Events, want)
	}
	if len(got.Checkpoints) != len(run.Checkpoints) || len(run.Checkpoints) == 0 {
		t.Errorf("checkpoints = %+v, native %+v", got.Checkpoints, run.Checkpoints)
	}
	for i, ck := range got.Checkpoints {
		nat := run.Checkpoints[len(run.Checkpoints)-1-i]
		if ck.Step != nat.Step || ck.Job != c.ID || ck.Object != "fine_tuning.job.checkpoint" || ck.Metrics["step"] != float64(nat.Step) {
			t.Errorf("checkpoint %d = %+v, native %+v", i, ck, nat)
		}
	}
	// The fine-tuned model answers as the native API does.
	native, err := h.c.Generate(ctx, client.GenerateRequest{Model: "main.openai.demo/1", MaxTokens: 8, Temperature: ptr(0.0),
		Messages: []client.ChatMessage{{Role: "user", Content: "What is 12 + 30?"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Chat == nil || got.Chat.Model != "main.openai.demo/1" || got.Chat.Text != native.Text || got.Chat.Finish != native.FinishReason {
		t.Errorf("chat with the fine-tuned model = %+v, want %q", got.Chat, native.Text)
	}
	if cj := got.Cancelled; cj.Status != "cancelled" || cj.Hyperparameters["n_epochs"] != 3.0 {
		t.Errorf("cancelled job = %+v", cj)
	}
	if len(got.Jobs) != 2 || got.Jobs[0] != got.Cancelled.ID || got.Jobs[1] != c.ID {
		t.Errorf("jobs.list paged by 1 = %v, want [%s %s]", got.Jobs, got.Cancelled.ID, c.ID)
	}
	for name, w := range map[string]struct {
		status     int
		param, msg string
	}{
		"dpo":          {400, "method.type", "dpo"},
		"noFile":       {400, "training_file", "no such file"},
		"epochs":       {400, "hyperparameters.n_epochs", "n_epochs 0"},
		"integrations": {400, "integrations", "not supported"},
		"purpose":      {400, "purpose", "fine-tune"},
		"missingJob":   {404, "id", "ftjob-nope"},
	} {
		r := got.Refused[name]
		if r.Status != w.status || r.Param != w.param || r.Type != "invalid_request_error" || !strings.Contains(r.Message, w.msg) {
			t.Errorf("refused %s = %+v, want %d naming %s (%q)", name, r, w.status, w.param, w.msg)
		}
	}
	if r := got.Refused["badData"]; r.Status != 400 || r.Param != "training_file" || !strings.Contains(r.Message, r.File+":3") ||
		strings.Contains(r.Message, h.home) {
		t.Errorf("job on a bad file = %+v, want 400 naming %s:3 (not the server's paths)", r, r.File)
	}
	if !got.Deleted.Deleted || got.AfterDelete.Status != 404 {
		t.Errorf("delete = %+v, then retrieve = %+v", got.Deleted, got.AfterDelete)
	}
	// A refused upload (the wrong purpose) left nothing behind.
	entries, err := os.ReadDir(filepath.Join(h.home, "catalog", ".volumes", "main", "openai", "files"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 { // train.jsonl's data and description
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("files volume holds %v, want the training file's two", names)
	}
}
