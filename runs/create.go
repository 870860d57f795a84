package runs

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"hone/catalog"
	"hone/client"
	"hone/modelref"
	"hone/optim"
	"hone/settings"
	"hone/store"
	"hone/train"
)

// params is what a run row keeps of its creation: the request as
// submitted, and what it resolved to.
type params struct {
	Request    client.CreateRunRequest `json:"request"`
	Model      modelref.Resolved       `json:"model"`
	Target     string                  `json:"target"` // catalog.schema.model
	Validation string                  `json:"validation,omitempty"`
	Spec       train.Spec              `json:"spec"`
	// BaseVersion pins a catalog base model to its version
	// (catalog.schema.model/N), which an adapter-only registration names.
	BaseVersion string `json:"base_version,omitempty"`
}

var taskNames = map[string]string{
	client.TaskChatCompletion:      "chat",
	client.TaskInstructionFinetune: "instruct",
	client.TaskContinuedPretrain:   "cpt",
}

var nameSlugRE = regexp.MustCompile(`[^a-z0-9]+`)

// Create validates req, then inserts the run and its queue job in one
// transaction. A refused request leaves nothing behind. Data over
// Config.InlineValidateMax is validated after the answer instead: the run
// is inserted PENDING and queued (or failed) by a background validation.
func (s *Service) Create(ctx context.Context, req client.CreateRunRequest) (*client.Run, error) {
	validate := req.ValidateInputs == nil || *req.ValidateInputs
	p, name, err := s.check(ctx, &req, false)
	if err != nil {
		return nil, err
	}
	var size int64
	later := false
	if validate {
		if max := s.cfg.InlineValidateMax; max >= 0 {
			size = dataSize(p.Spec, max)
			later = size > max
		}
		if !later {
			if err := s.checkData(ctx, p); err != nil {
				return nil, err
			}
		}
	}
	err = s.st.InTx(ctx, func(tx *store.Tx) error { return s.insertRunAs(ctx, tx, p, name, s.clock(), !later) })
	if err != nil {
		return nil, fmt.Errorf("create run: %w", err)
	}
	s.log.Info("run created", "run", name, "user", p.Request.User, "model", p.Model.Ref, "register_to", p.Target, "validating", later)
	if later {
		s.validateLater(name, p, size)
	}
	return s.Get(ctx, name)
}

// insertRun inserts the checked run p as name, with its experiment, its
// queue job and its first events, in tx.
func (s *Service) insertRun(ctx context.Context, tx *store.Tx, p *params, name string, now time.Time) error {
	return s.insertRunAs(ctx, tx, p, name, now, true)
}

// insertRunAs inserts the run QUEUED with its job when queued, else
// PENDING (its data to be validated in the background) without one.
func (s *Service) insertRunAs(ctx context.Context, tx *store.Tx, p *params, name string, now time.Time, queued bool) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("runs: encode params: %w", err)
	}
	req := &p.Request
	status := store.StatusQueued
	if !queued {
		status = store.StatusPending
	}
	run := &store.Run{Name: name, User: req.User, ExperimentPath: req.ExperimentPath, Status: status,
		Params: string(raw), RegisterTo: req.RegisterTo, CreatedAt: now}
	if err := tx.EnsureExperiment(ctx, store.Experiment{Path: run.ExperimentPath, User: run.User, CreatedAt: now}); err != nil {
		return err
	}
	if err := tx.InsertRun(ctx, run); err != nil {
		return err
	}
	evs := []store.Event{{Time: now, Type: string(store.StatusPending), Message: fmt.Sprintf("run created by %s from %s; will register to %s", run.User, p.Model.Ref, p.Target)}}
	if !queued {
		return tx.AddEvent(ctx, name, evs[0])
	}
	id, err := s.q.insertTx(ctx, tx, TrainArgs{Run: name})
	if err != nil {
		return err
	}
	if _, err := tx.UpdateRun(ctx, name, store.RunCond{}, store.RunUpdate{JobID: &id}); err != nil {
		return err
	}
	evs = append(evs, store.Event{Time: now, Type: string(store.StatusQueued), Message: "inputs validated; waiting for a worker"})
	for _, e := range evs {
		if err := tx.AddEvent(ctx, name, e); err != nil {
			return err
		}
	}
	return nil
}

// prepare checks and normalises req, confines its paths, resolves the model
// and builds the training spec with every setting resolved (package
// settings holds the defaults and the checks).
func (s *Service) prepare(ctx context.Context, req *client.CreateRunRequest) (*params, error) {
	if req.User == "" {
		req.User = s.cfg.DefaultUser
	}
	if err := checkName("user", req.User); err != nil {
		return nil, err
	}
	if req.ExperimentPath == "" {
		req.ExperimentPath = "/Users/" + req.User + "/hone"
	}
	if err := checkExperimentPath(req.ExperimentPath); err != nil {
		return nil, err
	}
	if req.TaskType == "" {
		req.TaskType = client.TaskChatCompletion
	}
	task, ok := taskNames[req.TaskType]
	if !ok {
		return nil, invalidf("task_type %q: want CHAT_COMPLETION, INSTRUCTION_FINETUNE or CONTINUED_PRETRAIN", req.TaskType)
	}
	if req.TrainingDuration == "" {
		req.TrainingDuration = settings.Duration
	}
	dur, err := train.ParseDuration(req.TrainingDuration)
	if err != nil {
		return nil, invalidf("%v", err)
	}
	if req.RegisterTo == "" {
		return nil, invalidf("register_to is required: catalog.schema or catalog.schema.model")
	}
	if req.TrainDataPath == "" {
		return nil, invalidf("train_data_path is required: a JSONL file (chat, instruct) or a folder of .txt files (continued pre-training)")
	}
	spec := train.Spec{Task: task, Duration: dur, LearningRate: req.LearningRate, ContextLength: req.ContextLength,
		BatchRows: req.BatchRows, GradAccum: req.GradAccum, Seed: req.Seed, CheckpointEvery: req.CheckpointEvery,
		KeepCheckpoints: req.KeepCheckpoints, EvalPrompts: req.EvalPrompts, Precision: req.Precision,
		TrainSplit: req.TrainDataSplit, EvalSplit: req.EvalDataSplit, TrainVersion: req.TrainDataVersion}
	if v := req.TrainDataVersion; v != nil && *v < 0 {
		return nil, invalidf("train_data_version %d: a Delta table version is 0 or more; omit it for the latest", *v)
	}
	if o := req.Optimizer; o != nil {
		if err := optimizerSpec(o, &spec); err != nil {
			return nil, invalidf("%v", err)
		}
		spec.WarmupFrac, spec.Decay, spec.FinalLRMult = o.WarmupFrac, o.Decay, o.FinalLRMult
	}
	loraSpec(req, &spec)
	// The settings are checked before anything slower (paths, the model).
	if spec, err = spec.Resolve(); err != nil {
		return nil, invalidf("%v", err)
	}
	if err := checkSharding(req); err != nil {
		return nil, err
	}
	if err := s.confinePaths(req, &spec); err != nil {
		return nil, err
	}
	if spec, err = train.ResolveAdapter(spec); err != nil {
		return nil, invalidf("%v", err)
	}
	m, err := s.resolveModel(ctx, req, &spec)
	if err != nil {
		return nil, err
	}
	spec = spec.WithModelLoRATargets() // the architecture's defaults, now the model is known
	if err := train.CheckDistOptions(spec, distOptions(req)); err != nil {
		return nil, invalidf("sharding: %v", err)
	}
	p := &params{Request: *req, Model: *m, Spec: spec}
	if p.BaseVersion, err = s.pinVersion(ctx, m); err != nil {
		return nil, err
	}
	return p, nil
}

// loraSpec puts the request's method and LoRA settings in spec, unresolved.
// The adapter path is confined later (confinePaths); it is set now because
// it decides which LoRA settings take defaults.
func loraSpec(req *client.CreateRunRequest, spec *train.Spec) {
	spec.Method, spec.Adapter, spec.AdapterOnly = req.Method, req.AdapterPath, req.RegisterAdapter
	if l := req.LoRA; l != nil {
		spec.LoRA = &train.LoRASpec{Rank: l.Rank, Alpha: l.Alpha, Dropout: l.Dropout, Targets: l.TargetModules, RSLoRA: l.UseRSLoRA, QuantizeBase: l.QuantizeBase, QuantizeEmbeddings: l.QuantizeEmbeddings}
	}
}

// showLoRA is the method and LoRA settings a resolved spec trains with, as
// the API shows them.
func showLoRA(sp train.Spec) (string, *client.LoRA) {
	method := cmp.Or(sp.Method, settings.Method)
	if sp.LoRA == nil {
		return method, nil
	}
	l := sp.LoRA
	return method, &client.LoRA{Rank: l.Rank, Alpha: l.Alpha, Dropout: l.Dropout, TargetModules: l.Targets, UseRSLoRA: l.RSLoRA, QuantizeBase: l.QuantizeBase, QuantizeEmbeddings: l.QuantizeEmbeddings}
}

// pinVersion is catalog.schema.model/N of a base model given as a catalog
// reference (an alias moves; the run trained on one version), else "".
func (s *Service) pinVersion(ctx context.Context, m *modelref.Resolved) (string, error) {
	ref, ok, err := catalog.ParseRef(m.Ref)
	if m.Source != "catalog" || !ok || err != nil {
		return "", nil
	}
	v, err := s.cat.Resolve(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("pin the base model's version: %w", err)
	}
	return fmt.Sprintf("%s/%d", ref.Name, v.Version), nil
}

// confinePaths confines the request's data and weights paths to the data
// roots and puts their real paths in spec.
func (s *Service) confinePaths(req *client.CreateRunRequest, spec *train.Spec) error {
	var err error
	if spec.TrainData, err = s.confineField("train_data_path", req.TrainDataPath); err != nil {
		return err
	}
	if req.EvalDataPath != "" {
		if spec.EvalData, err = s.confineField("eval_data_path", req.EvalDataPath); err != nil {
			return err
		}
	}
	if req.CustomWeightsPath != "" {
		if spec.InitWeights, err = s.confineField("custom_weights_path", req.CustomWeightsPath); err != nil {
			return err
		}
	}
	if req.AdapterPath != "" {
		if spec.Adapter, err = s.confineField("adapter_path", req.AdapterPath); err != nil {
			return err
		}
	}
	return nil
}

// resolveModel resolves the request's model, confines its files (and the
// custom weights') and checks the context length against it.
func (s *Service) resolveModel(ctx context.Context, req *client.CreateRunRequest, spec *train.Spec) (*modelref.Resolved, error) {
	m, err := s.models.Resolve(ctx, req.Model)
	if err != nil {
		if errors.Is(err, modelref.ErrInvalid) || errors.Is(err, ErrInvalid) {
			return nil, invalidf("%v", err)
		}
		return nil, err
	}
	if err := s.confineModel(m); err != nil {
		return nil, err
	}
	if spec.InitWeights != "" {
		if err := confineDir(s.roots, "the server's data roots", spec.InitWeights); err != nil {
			return nil, invalidf("custom_weights_path: %v", err)
		}
	}
	if req.ContextLength > m.MaxContext && m.MaxContext > 0 {
		return nil, invalidf("context_length %d exceeds the model's maximum %d", req.ContextLength, m.MaxContext)
	}
	spec.ModelDir = m.Dir
	return m, nil
}

// optimizerConfig is the request's AdamW settings over the defaults: an
// unset field takes its default, a set one (0 included) is used as given.
func optimizerConfig(o *client.Optimizer) optim.AdamWConfig {
	a := optim.DefaultAdamW
	for _, f := range []struct {
		dst *float64
		v   *float64
	}{{&a.Beta1, o.Beta1}, {&a.Beta2, o.Beta2}, {&a.WeightDecay, o.WeightDecay}, {&a.MaxGradNorm, o.MaxGradNorm}} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	if o.Eps != 0 {
		a.Eps = o.Eps
	}
	return a
}

// checkName refuses a user name that could not name a directory or a path
// segment: empty, "." or "..", over 255 bytes, or holding "/" or control
// characters.
func checkName(field, v string) error {
	switch {
	case v == "" || v == "." || v == "..":
		return invalidf("%s %q is not a name; use letters, digits, '.', '-' or '_'", field, v)
	case len(v) > 255:
		return invalidf("%s is %d bytes long; use at most 255", field, len(v))
	case strings.ContainsRune(v, '/'):
		return invalidf("%s %q must not contain /", field, v)
	case strings.IndexFunc(v, unicode.IsControl) >= 0 || !utf8.ValidString(v):
		return invalidf("%s %q holds control characters or invalid UTF-8; remove them", field, v)
	}
	return nil
}

// checkExperimentPath refuses an experiment path that is not absolute or
// whose segments would not pass as user names, e.g. /Users/ann/../bob.
func checkExperimentPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return invalidf("experiment_path %q must start with /, e.g. /Users/ann/hone", p)
	}
	if len(p) > 1024 {
		return invalidf("experiment_path is %d bytes long; use at most 1024", len(p))
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if err := checkName("experiment_path segment", seg); err != nil {
			return invalidf("experiment_path %q: %v", p, err)
		}
	}
	return nil
}

func (s *Service) confineField(field, p string) (string, error) {
	real, err := s.resolvePath(p)
	if err != nil {
		return "", invalidf("%s: %v", field, err)
	}
	return real, nil
}

// runName is the base model's short name and a random suffix, usable as a
// catalog model name.
func runName(baseModel string) string {
	slug := strings.Trim(nameSlugRE.ReplaceAllString(strings.ToLower(filepath.Base(baseModel)), "-"), "-")
	if len(slug) > 40 {
		slug = strings.Trim(slug[:40], "-")
	}
	if slug == "" {
		slug = "run"
	}
	var b [4]byte
	rand.Read(b[:])
	return slug + "-" + hex.EncodeToString(b[:])
}

// decodeParams reads a run row's params.
func decodeParams(r *store.Run) (*params, error) {
	var p params
	if err := json.Unmarshal([]byte(r.Params), &p); err != nil {
		return nil, fmt.Errorf("run %s: decode params: %w", r.Name, err)
	}
	return &p, nil
}
