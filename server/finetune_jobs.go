package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"hone/client"
	"hone/runs"
	"hone/settings"
	"hone/store"
)

// The fine-tuning jobs of the OpenAI API, each a native run (see
// finetune_files.go). Hyperparameters translate as: n_epochs N to
// training_duration "Nep", learning_rate_multiplier m to learning_rate
// m·1e-5 (hone's default peak), batch_size B to B rows per optimizer step
// (grad_accum B of one row each); "auto" or absent leaves hone's default.
// Anything else (other method types, integrations, metadata, unknown
// fields) is refused with 400 naming the field.

// fineTuningRoutes serve the OpenAI files and fine-tuning jobs API.
func (s *Server) fineTuningRoutes() {
	s.fileRoutes()
	m := s.mux
	m.HandleFunc("POST /v1/fine_tuning/jobs", s.oaiHandler(func(r *http.Request) (any, error) {
		req, err := s.decodeJobRequest(r)
		if err != nil {
			return nil, err
		}
		native, err := s.nativeJob(r.Context(), req)
		if err != nil {
			return nil, err
		}
		run, err := s.runs.Create(r.Context(), native)
		if err != nil {
			return nil, s.jobParamError(err, req)
		}
		return s.jobView(run), nil
	}))
	m.HandleFunc("GET /v1/fine_tuning/jobs", s.oaiHandler(s.listJobs))
	m.HandleFunc("GET /v1/fine_tuning/jobs/{id}", s.oaiHandler(func(r *http.Request) (any, error) {
		run, err := s.getJob(r.Context(), r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		return s.jobView(run), nil
	}))
	m.HandleFunc("POST /v1/fine_tuning/jobs/{id}/cancel", s.oaiHandler(func(r *http.Request) (any, error) {
		run, err := s.getJob(r.Context(), r.PathValue("id"))
		if err != nil {
			return nil, err
		}
		if _, err := s.runs.Cancel(r.Context(), client.CancelRequest{Names: []string{run.Name}}); err != nil {
			return nil, err
		}
		if run, err = s.runs.Get(r.Context(), run.Name); err != nil {
			return nil, err
		}
		return s.jobView(run), nil
	}))
	m.HandleFunc("GET /v1/fine_tuning/jobs/{id}/events", s.oaiHandler(s.jobEvents))
	m.HandleFunc("GET /v1/fine_tuning/jobs/{id}/checkpoints", s.oaiHandler(s.jobCheckpoints))
}

// oaiHandler adapts a function returning (body, error) to OpenAI's
// responses and error bodies.
func (s *Server) oaiHandler(fn func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := fn(r)
		if err != nil {
			s.ftFail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, body)
	}
}

// ftFail writes an OpenAI error for the files and jobs routes, whose
// missing resources are files and jobs, not models.
func (s *Server) ftFail(w http.ResponseWriter, r *http.Request, err error) {
	code, name := statusOf(err)
	var tl tooLarge
	if errors.As(err, &tl) {
		code, name = http.StatusRequestEntityTooLarge, "file_too_large"
	}
	writeJSON(w, code, map[string]any{"error": oaiError(code, name, oaiParam(err), s.publicMessage(r, code, err))})
}

// oaiHyper is a set of hyperparameters, each a number or "auto".
type oaiHyper struct {
	NEpochs                json.RawMessage `json:"n_epochs"`
	BatchSize              json.RawMessage `json:"batch_size"`
	LearningRateMultiplier json.RawMessage `json:"learning_rate_multiplier"`
}

func (h *oaiHyper) given() bool {
	return h != nil && (len(h.NEpochs) > 0 || len(h.BatchSize) > 0 || len(h.LearningRateMultiplier) > 0)
}

type oaiJobRequest struct {
	Model           string          `json:"model"`
	TrainingFile    string          `json:"training_file"`
	ValidationFile  *string         `json:"validation_file"`
	Suffix          *string         `json:"suffix"`
	Seed            *int64          `json:"seed"`
	Hyperparameters *oaiHyper       `json:"hyperparameters"`
	Integrations    json.RawMessage `json:"integrations"`
	Metadata        json.RawMessage `json:"metadata"`
	Method          *struct {
		Type       string `json:"type"`
		Supervised *struct {
			Hyperparameters *oaiHyper `json:"hyperparameters"`
		} `json:"supervised"`
		DPO           json.RawMessage `json:"dpo"`
		Reinforcement json.RawMessage `json:"reinforcement"`
	} `json:"method"`
}

var unknownFieldRE = regexp.MustCompile(`unknown field "([^"]+)"`)

// decodeJobRequest reads a job request, refusing fields hone does not know
// (naming them) rather than ignoring what the caller asked for.
func (s *Server) decodeJobRequest(r *http.Request) (*oaiJobRequest, error) {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, s.max))
	dec.DisallowUnknownFields()
	var req oaiJobRequest
	if err := dec.Decode(&req); err != nil {
		if m := unknownFieldRE.FindStringSubmatch(err.Error()); m != nil {
			return nil, badParam(m[1], fmt.Sprintf("%s is not supported by hone's fine-tuning API", m[1]))
		}
		return nil, badRequest{fmt.Sprintf("request body: %v", err)}
	}
	return &req, nil
}

func present(raw json.RawMessage) bool {
	v := strings.TrimSpace(string(raw))
	return v != "" && v != "null" && v != "[]" && v != "{}"
}

// nativeJob translates a job request to a run request.
func (s *Server) nativeJob(ctx context.Context, req *oaiJobRequest) (client.CreateRunRequest, error) {
	out := client.CreateRunRequest{Model: req.Model, ExperimentPath: oaiExperiment, RegisterTo: s.oai.schemaName()}
	switch {
	case req.Model == "":
		return out, badParam("model", "model is required: a base model hone can train (a Hugging Face id in the cache, a catalog version, a local directory)")
	case req.TrainingFile == "":
		return out, badParam("training_file", "training_file is required: the id of a file uploaded with purpose fine-tune")
	case present(req.Integrations):
		return out, badParam("integrations", "integrations are not supported: hone tracks runs itself (hone runs get, the UI)")
	case present(req.Metadata):
		return out, badParam("metadata", "metadata is not supported")
	}
	hyper := req.Hyperparameters
	hyperParam := "hyperparameters"
	if m := req.Method; m != nil {
		switch m.Type {
		case "supervised":
		case "":
			return out, badParam("method.type", "method.type is required: supervised")
		default:
			return out, badParam("method.type", fmt.Sprintf("method type %q is not supported: hone fine-tunes supervised only", m.Type))
		}
		switch {
		case present(m.DPO):
			return out, badParam("method.dpo", "method.dpo is not supported: hone fine-tunes supervised only")
		case present(m.Reinforcement):
			return out, badParam("method.reinforcement", "method.reinforcement is not supported: hone fine-tunes supervised only")
		}
		if m.Supervised != nil && m.Supervised.Hyperparameters.given() {
			if hyper.given() {
				return out, badParam("hyperparameters", "give hyperparameters either at the top level or in method.supervised.hyperparameters, not both")
			}
			hyper, hyperParam = m.Supervised.Hyperparameters, "method.supervised.hyperparameters"
		}
	}
	if err := applyHyper(hyper, hyperParam, &out); err != nil {
		return out, err
	}
	if req.Seed != nil {
		if *req.Seed < 0 {
			return out, badParam("seed", fmt.Sprintf("seed %d: want 0 or more", *req.Seed))
		}
		out.Seed = uint64(*req.Seed)
	}
	if req.Suffix != nil && *req.Suffix != "" {
		suffix := *req.Suffix
		if len(suffix) > 64 || !suffixRE.MatchString(suffix) {
			return out, badParam("suffix", fmt.Sprintf("suffix %q: want up to 64 letters, digits, _ or - (it names the model in the catalog)", suffix))
		}
		out.RegisterTo += "." + suffix
	}
	var err error
	if out.TrainDataPath, err = s.jobFile(req.TrainingFile, "training_file"); err != nil {
		return out, err
	}
	if req.ValidationFile != nil && *req.ValidationFile != "" {
		if out.EvalDataPath, err = s.jobFile(*req.ValidationFile, "validation_file"); err != nil {
			return out, err
		}
	}
	if out.TaskType, err = s.taskOf(out.TrainDataPath, req.TrainingFile); err != nil {
		return out, err
	}
	return out, s.ensureOAISchema(ctx)
}

var suffixRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*$`)

// applyHyper puts the hyperparameters in the run request.
func applyHyper(h *oaiHyper, param string, out *client.CreateRunRequest) error {
	if h == nil {
		return nil
	}
	n, err := autoNumber(h.NEpochs, param+".n_epochs")
	if err != nil {
		return err
	}
	if n != nil {
		if *n < 1 || *n != float64(int(*n)) || *n > 50 {
			return badParam(param+".n_epochs", fmt.Sprintf("n_epochs %g: want a whole number from 1 to 50, or \"auto\"", *n))
		}
		out.TrainingDuration = fmt.Sprintf("%dep", int(*n))
	}
	b, err := autoNumber(h.BatchSize, param+".batch_size")
	if err != nil {
		return err
	}
	if b != nil {
		if *b < 1 || *b != float64(int(*b)) || *b > 256 {
			return badParam(param+".batch_size", fmt.Sprintf("batch_size %g: want a whole number from 1 to 256, or \"auto\"", *b))
		}
		out.BatchRows, out.GradAccum = 1, int(*b)
	}
	m, err := autoNumber(h.LearningRateMultiplier, param+".learning_rate_multiplier")
	if err != nil {
		return err
	}
	if m != nil {
		if !(*m > 0) || *m*settings.LearningRate > 1 {
			return badParam(param+".learning_rate_multiplier", fmt.Sprintf("learning_rate_multiplier %g: want a positive number (times hone's default %g), or \"auto\"",
				*m, settings.LearningRate))
		}
		out.LearningRate = *m * settings.LearningRate
	}
	return nil
}

// autoNumber reads a hyperparameter: nil for absent or "auto".
func autoNumber(raw json.RawMessage, param string) (*float64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "auto" {
			return nil, nil
		}
		return nil, badParam(param, fmt.Sprintf("%s %q: want a number or \"auto\"", param, s))
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, badParam(param, fmt.Sprintf("%s %s: want a number or \"auto\"", param, raw))
	}
	return &f, nil
}

// jobFile is the volume path of an uploaded file named by a job.
func (s *Server) jobFile(id, param string) (string, error) {
	if _, err := s.getFile(id); err != nil {
		return "", badParam(param, fmt.Sprintf("%s %s: no such file; upload it first (POST /v1/files, purpose fine-tune)", param, id))
	}
	return s.oai.dataPath(id), nil
}

// taskOf is the task of an uploaded training file: instruction
// fine-tuning for OpenAI's legacy prompt/completion lines, else chat.
func (s *Server) taskOf(volPath, id string) (string, error) {
	p, err := s.cat.VolumePath(volPath)
	if err != nil {
		return "", badParam("training_file", fmt.Sprintf("training_file %s: %v", id, err))
	}
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("read training file %s: %w", id, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var keys map[string]json.RawMessage
		if json.Unmarshal(line, &keys) == nil {
			_, prompt := keys["prompt"]
			_, messages := keys["messages"]
			if prompt && !messages {
				return client.TaskInstructionFinetune, nil
			}
		}
		break // the trainer's validation reports a bad line with its number
	}
	return client.TaskChatCompletion, nil
}

// jobParamError renames what the native API says of its fields to the
// job's fields, and the uploaded files' paths (as volume paths or as the
// server's real paths) to their ids, so that a data error reads
// "file-...:3: ..." and names the job field of that file.
func (s *Server) jobParamError(err error, req *oaiJobRequest) error {
	if !errors.Is(err, runs.ErrInvalid) {
		return err
	}
	msg := err.Error()
	dirs := []string{s.oai.volumeDir() + "/"}
	if real, rerr := s.cat.VolumePath(s.oai.volumeDir()); rerr == nil {
		dirs = append(dirs, real+string(os.PathSeparator))
	}
	for _, dir := range dirs {
		for {
			i := strings.Index(msg, dir)
			if i < 0 {
				break
			}
			id, tail, _ := strings.Cut(msg[i+len(dir):], ".jsonl")
			msg = msg[:i] + id + tail
		}
	}
	param := ""
	for native, oai := range map[string]string{"train_data_path": "training_file", "eval_data_path": "validation_file",
		"model": "model", "learning_rate": "hyperparameters.learning_rate_multiplier", "training_duration": "hyperparameters.n_epochs",
		"grad_accum": "hyperparameters.batch_size", "register_to": "suffix"} {
		if strings.HasPrefix(msg, native) {
			param = oai
		}
	}
	switch {
	case req.ValidationFile != nil && *req.ValidationFile != "" && strings.Contains(msg, *req.ValidationFile+":"):
		param = "validation_file"
	case strings.Contains(msg, req.TrainingFile+":"):
		param = "training_file"
	}
	return paramError{param, badRequest{msg}}
}

// getJob is the run a job id names.
func (s *Server) getJob(ctx context.Context, id string) (*client.Run, error) {
	name, ok := strings.CutPrefix(id, oaiJobPrefix)
	if !ok || name == "" {
		return nil, paramError{"id", fmt.Errorf("no such fine-tuning job: %s (job ids start with %s): %w", id, oaiJobPrefix, store.ErrNotFound)}
	}
	run, err := s.runs.Get(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, paramError{"id", fmt.Errorf("no such fine-tuning job: %s: %w", id, store.ErrNotFound)}
	}
	return run, err
}

// oaiJob is OpenAI's fine-tuning job object.
type oaiJob struct {
	ID              string         `json:"id"`
	Object          string         `json:"object"`
	CreatedAt       int64          `json:"created_at"`
	FinishedAt      *int64         `json:"finished_at"`
	EstimatedFinish *int64         `json:"estimated_finish"`
	Model           string         `json:"model"`
	FineTunedModel  *string        `json:"fine_tuned_model"`
	OrganizationID  string         `json:"organization_id"`
	Status          string         `json:"status"`
	TrainingFile    string         `json:"training_file"`
	ValidationFile  *string        `json:"validation_file"`
	ResultFiles     []string       `json:"result_files"`
	TrainedTokens   *int64         `json:"trained_tokens"`
	Hyperparameters map[string]any `json:"hyperparameters"`
	Method          map[string]any `json:"method"`
	Seed            uint64         `json:"seed"`
	Suffix          *string        `json:"user_provided_suffix"`
	Error           *oaiJobError   `json:"error"`
	Integrations    []any          `json:"integrations"`
	Metadata        map[string]any `json:"metadata"`
}

type oaiJobError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
}

// oaiStatus maps hone's run states to OpenAI's job states. A run being
// stopped is cancelled already: it saves a checkpoint and stops within one
// optimizer step, and will not train on.
var oaiStatus = map[string]string{
	client.StatusPending: "validating_files", client.StatusQueued: "queued", client.StatusStarting: "running",
	client.StatusRunning: "running", client.StatusCompleted: "succeeded", client.StatusFailed: "failed",
	client.StatusStopping: "cancelled", client.StatusStopped: "cancelled",
}

func unixp(t time.Time) *int64 {
	v := t.Unix()
	return &v
}

func (s *Server) jobView(r *client.Run) *oaiJob {
	c := r.Config
	j := &oaiJob{ID: oaiJobPrefix + r.Name, Object: "fine_tuning.job", CreatedAt: r.CreatedAt.Unix(), Model: c.Model,
		OrganizationID: "hone", Status: oaiStatus[r.Status], TrainingFile: c.TrainDataPath, ResultFiles: []string{}, Seed: c.Seed}
	if id := s.oai.fileID(c.TrainDataPath); id != "" {
		j.TrainingFile = id
	}
	if c.EvalDataPath != "" {
		v := c.EvalDataPath
		if id := s.oai.fileID(v); id != "" {
			v = id
		}
		j.ValidationFile = &v
	}
	if r.CompletedAt != nil {
		j.FinishedAt = unixp(*r.CompletedAt)
	}
	if r.EstimatedEndAt != nil && !client.Terminal(r.Status) {
		j.EstimatedFinish = unixp(*r.EstimatedEndAt)
	}
	if r.RegisteredModel != "" {
		m := r.RegisteredModel
		j.FineTunedModel = &m
	}
	if r.Status == client.StatusCompleted && r.Metrics != nil {
		t := r.Metrics.TokensSeen
		j.TrainedTokens = &t
	}
	if r.Status == client.StatusFailed {
		j.Error = &oaiJobError{Code: "training_failed", Message: r.Error}
	}
	if parts := strings.Split(c.RegisterTo, "."); len(parts) == 3 && c.ExperimentPath == oaiExperiment {
		j.Suffix = &parts[2]
	}
	h := map[string]any{"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
	dur := c.TrainingDuration
	if dur == "" {
		dur = settings.Duration
	}
	if n, ok := strings.CutSuffix(dur, "ep"); ok {
		if v, err := strconv.Atoi(n); err == nil {
			h["n_epochs"] = v
		}
	}
	if c.GradAccum > 0 {
		h["batch_size"] = max(c.BatchRows, 1) * c.GradAccum
	}
	if c.LearningRate > 0 {
		h["learning_rate_multiplier"] = c.LearningRate / settings.LearningRate
	}
	j.Hyperparameters = h
	j.Method = map[string]any{"type": "supervised", "supervised": map[string]any{"hyperparameters": h}}
	return j
}

// pageAfter is OpenAI's cursor pagination over ids, newest first: the
// items after the one with id after (from the start when ""), at most
// limit of them (default 20, at most 100), and whether more follow.
func pageAfter[T any](items []T, id func(T) string, after string, limitParam string) ([]T, bool, error) {
	limit := 20
	if limitParam != "" {
		n, err := strconv.Atoi(limitParam)
		if err != nil || n < 1 || n > 100 {
			return nil, false, badParam("limit", fmt.Sprintf("limit %q: want 1 to 100", limitParam))
		}
		limit = n
	}
	start := 0
	if after != "" {
		start = -1
		for i, it := range items {
			if id(it) == after {
				start = i + 1
				break
			}
		}
		if start < 0 {
			return nil, false, badParam("after", fmt.Sprintf("after %q: no such id in this list", after))
		}
	}
	items = items[start:]
	if len(items) > limit {
		return items[:limit], true, nil
	}
	return items, false, nil
}

// listJobs lists the jobs (the runs in the API's experiment), newest first.
func (s *Server) listJobs(r *http.Request) (any, error) {
	var all []*oaiJob
	tok := ""
	for {
		page, err := s.runs.List(r.Context(), client.ListRunsOptions{ExperimentPath: oaiExperiment, Limit: 1000, PageToken: tok})
		if err != nil {
			return nil, err
		}
		for i := range page.Runs {
			all = append(all, s.jobView(&page.Runs[i]))
		}
		if tok = page.NextPageToken; tok == "" {
			break
		}
	}
	q := r.URL.Query()
	data, more, err := pageAfter(all, func(j *oaiJob) string { return j.ID }, q.Get("after"), q.Get("limit"))
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = []*oaiJob{}
	}
	return map[string]any{"object": "list", "data": data, "has_more": more}, nil
}

type oaiEvent struct {
	ID        string         `json:"id"`
	Object    string         `json:"object"`
	CreatedAt int64          `json:"created_at"`
	Level     string         `json:"level"`
	Message   string         `json:"message"`
	Type      string         `json:"type"`
	Data      map[string]any `json:"data"`
}

// jobEvents lists a job's events, newest first, as OpenAI does; data.type
// is hone's event type (QUEUED, RUNNING, CHECKPOINT, EVAL, COMPLETED, ...).
func (s *Server) jobEvents(r *http.Request) (any, error) {
	run, err := s.getJob(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	var all []oaiEvent
	for i := len(run.Events) - 1; i >= 0; i-- {
		e := run.Events[i]
		level := "info"
		switch e.Type {
		case client.StatusFailed:
			level = "error"
		case client.StatusStopping, client.StatusStopped:
			level = "warn"
		}
		all = append(all, oaiEvent{ID: fmt.Sprintf("ftevent-%d", e.ID), Object: "fine_tuning.job.event", CreatedAt: e.Time.Unix(),
			Level: level, Message: e.Message, Type: "message", Data: map[string]any{"type": e.Type, "status": oaiStatus[e.Type]}})
	}
	q := r.URL.Query()
	data, more, err := pageAfter(all, func(e oaiEvent) string { return e.ID }, q.Get("after"), q.Get("limit"))
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = []oaiEvent{}
	}
	return map[string]any{"object": "list", "data": data, "has_more": more}, nil
}

type oaiCheckpoint struct {
	ID                       string         `json:"id"`
	Object                   string         `json:"object"`
	CreatedAt                int64          `json:"created_at"`
	FineTunedModelCheckpoint string         `json:"fine_tuned_model_checkpoint"`
	FineTuningJobID          string         `json:"fine_tuning_job_id"`
	StepNumber               int            `json:"step_number"`
	Metrics                  map[string]any `json:"metrics"`
}

// jobCheckpoints lists a job's checkpoints, newest first, with the
// training and eval loss of their step. fine_tuned_model_checkpoint is the
// checkpoint's directory on the server (hone serves registered versions,
// not checkpoints).
func (s *Server) jobCheckpoints(r *http.Request) (any, error) {
	run, err := s.getJob(r.Context(), r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	loss, evalLoss := map[int]float64{}, map[int]float64{}
	for p := (client.PageOptions{Limit: 1000}); ; {
		m, err := s.runs.Metrics(r.Context(), run.Name, p)
		if err != nil {
			return nil, err
		}
		for _, st := range m.Steps {
			if st.Loss != nil {
				loss[st.Step] = *st.Loss
			}
		}
		for _, e := range m.Evals {
			if e.Loss != nil {
				evalLoss[e.Step] = *e.Loss
			}
		}
		if p.PageToken = m.NextPageToken; p.PageToken == "" {
			break
		}
	}
	var all []oaiCheckpoint
	for i := len(run.Checkpoints) - 1; i >= 0; i-- {
		c := run.Checkpoints[i]
		metrics := map[string]any{"step": c.Step}
		if v, ok := loss[c.Step]; ok {
			metrics["train_loss"] = v
		}
		if v, ok := evalLoss[c.Step]; ok {
			metrics["valid_loss"] = v
		}
		all = append(all, oaiCheckpoint{ID: fmt.Sprintf("ftckpt-%s-%d", run.Name, c.Step), Object: "fine_tuning.job.checkpoint",
			CreatedAt: c.Time.Unix(), FineTunedModelCheckpoint: c.Path, FineTuningJobID: oaiJobPrefix + run.Name, StepNumber: c.Step,
			Metrics: metrics})
	}
	q := r.URL.Query()
	data, more, err := pageAfter(all, func(c oaiCheckpoint) string { return c.ID }, q.Get("after"), q.Get("limit"))
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = []oaiCheckpoint{}
	}
	return map[string]any{"object": "list", "data": data, "has_more": more}, nil
}
