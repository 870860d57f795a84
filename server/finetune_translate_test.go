package server_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"hone/internal/testmodel"
	"hone/store/storetest"
)

// TestFineTuningTranslation checks how job requests become run requests:
// the task from the file's format, hyperparameters in either place and
// "auto", and the refusals, each naming its field.
func TestFineTuningTranslation(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{token: testToken, realTrainer: true})
	model := filepath.Join(h.data, "tiny-llama3")
	testmodel.Write(t, model, testmodel.Llama3Tiny, 7)
	auth := "Bearer " + testToken
	upload := func(content string) string {
		body, ct := multipartBody(t, "fine-tune", "data.jsonl", content)
		got := send(t, "POST", h.url+"/v1/files", body, map[string]string{"Content-Type": ct, "Authorization": auth})
		var f struct{ ID string }
		if err := json.Unmarshal([]byte(got.body), &f); err != nil || got.status != 200 {
			t.Fatalf("upload = %d %s", got.status, got.body)
		}
		return f.ID
	}
	instruct := upload(strings.Repeat(`{"prompt": "What is 2+2?", "completion": " 4"}`+"\n", 4))
	chat := upload(`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}` + "\n")
	create := func(body string) (int, map[string]any) {
		got := send(t, "POST", h.url+"/v1/fine_tuning/jobs", body, map[string]string{"Content-Type": "application/json", "Authorization": auth})
		var out map[string]any
		json.Unmarshal([]byte(got.body), &out)
		return got.status, out
	}
	jobBody := func(file, extra string) string {
		return `{"model": "` + model + `", "training_file": "` + file + `"` + extra + `}`
	}

	for _, tc := range []struct {
		name, file, extra string
		task, duration    string
		lr                float64
		gradAccum         int
	}{
		{"instruct file", instruct, `, "hyperparameters": {"n_epochs": 2, "learning_rate_multiplier": 2, "batch_size": 4}`,
			"INSTRUCTION_FINETUNE", "2ep", 2e-5, 4},
		{"chat file, method, auto", chat, `, "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": "auto", "learning_rate_multiplier": 0.5, "batch_size": "auto"}}}`,
			"CHAT_COMPLETION", "1ep", 5e-6, 0},
	} {
		status, job := create(jobBody(tc.file, tc.extra))
		if status != 200 {
			t.Fatalf("%s: create = %d %v", tc.name, status, job)
		}
		name := strings.TrimPrefix(job["id"].(string), "ftjob-")
		run, err := h.c.GetRun(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		c := run.Config
		if c.TaskType != tc.task || c.TrainingDuration != tc.duration || c.LearningRate != tc.lr || c.GradAccum != tc.gradAccum ||
			c.ExperimentPath != "/openai/fine_tuning" || c.RegisterTo != "main.openai" {
			t.Errorf("%s: run config = %+v, want task %s, duration %q, lr %g, grad_accum %d", tc.name, c, tc.task, tc.duration, tc.lr, tc.gradAccum)
		}
		if hp := job["hyperparameters"].(map[string]any); hp["learning_rate_multiplier"] != tc.lr/1e-5 {
			t.Errorf("%s: hyperparameters shown = %v", tc.name, hp)
		}
		send(t, "POST", h.url+"/v1/fine_tuning/jobs/"+job["id"].(string)+"/cancel", "", map[string]string{"Authorization": auth})
	}

	for _, tc := range []struct{ name, body, param, msg string }{
		{"both places", jobBody(chat, `, "hyperparameters": {"n_epochs": 1}, "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}`),
			"hyperparameters", "not both"},
		{"reinforcement", jobBody(chat, `, "method": {"type": "reinforcement"}`), "method.type", "reinforcement"},
		{"lr word", jobBody(chat, `, "hyperparameters": {"learning_rate_multiplier": "high"}`), "hyperparameters.learning_rate_multiplier", "number or \"auto\""},
		{"batch", jobBody(chat, `, "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 0.5}}}`),
			"method.supervised.hyperparameters.batch_size", "batch_size"},
		{"suffix", jobBody(chat, `, "suffix": "no spaces please"`), "suffix", "suffix"},
		{"unknown field", jobBody(chat, `, "beta": 0.1`), "beta", "not supported"},
		{"metadata", jobBody(chat, `, "metadata": {"team": "a"}`), "metadata", "not supported"},
		{"seed", jobBody(chat, `, "seed": -1`), "seed", "seed -1"},
		{"no model", `{"training_file": "` + chat + `"}`, "model", "model is required"},
		{"model missing", `{"model": "org/absent", "training_file": "` + chat + `"}`, "model", "org/absent"},
	} {
		status, out := create(tc.body)
		e, _ := out["error"].(map[string]any)
		if status != 400 || e == nil || e["param"] != tc.param || e["type"] != "invalid_request_error" || !strings.Contains(e["message"].(string), tc.msg) {
			t.Errorf("%s: %d %v, want 400 naming param %s (%q)", tc.name, status, out, tc.param, tc.msg)
		}
	}
	got := send(t, "GET", h.url+"/v1/fine_tuning/jobs?after=ftjob-unknown", "", map[string]string{"Authorization": auth})
	if got.status != 400 || !strings.Contains(got.body, `"param": "after"`) {
		t.Errorf("list after an unknown id = %d %s", got.status, got.body)
	}
	got = send(t, "GET", h.url+"/v1/fine_tuning/jobs?limit=2", "", map[string]string{"Authorization": auth})
	var list struct {
		Data    []struct{ ID string }
		HasMore bool `json:"has_more"`
	}
	if json.Unmarshal([]byte(got.body), &list); len(list.Data) != 2 || list.HasMore {
		t.Errorf("list = %s, want the two jobs and no more", got.body)
	}
}
