package runs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strings"

	"hone/catalog"
	"hone/client"
	"hone/modelref"
	"hone/optim"
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
}

// DefaultLearningRate is used when a request sets none: a conservative
// peak for full fine-tuning with AdamW.
const DefaultLearningRate = 1e-5

var taskNames = map[string]string{
	client.TaskChatCompletion:      "chat",
	client.TaskInstructionFinetune: "instruct",
	client.TaskContinuedPretrain:   "cpt",
}

var nameSlugRE = regexp.MustCompile(`[^a-z0-9]+`)

// Create validates req, then inserts the run and its queue job in one
// transaction. A refused request leaves nothing behind.
func (s *Service) Create(ctx context.Context, req client.CreateRunRequest) (*client.Run, error) {
	p, err := s.prepare(ctx, &req)
	if err != nil {
		return nil, err
	}
	name := runName(p.Model.BaseModel)
	target, err := s.cat.CheckTarget(ctx, req.RegisterTo, name)
	if err != nil {
		if errors.Is(err, catalog.ErrInvalid) {
			return nil, invalidf("%v", err)
		}
		return nil, err
	}
	p.Target = target.String()
	if req.ValidateInputs == nil || *req.ValidateInputs {
		summary, err := s.tr.Validate(ctx, p.Spec)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, invalidf("%v", err)
		}
		p.Validation = summary
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("runs: encode params: %w", err)
	}
	now := s.clock()
	run := &store.Run{Name: name, User: req.User, ExperimentPath: req.ExperimentPath, Status: store.StatusQueued,
		Params: string(raw), RegisterTo: req.RegisterTo, CreatedAt: now}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.EnsureExperiment(ctx, store.Experiment{Path: run.ExperimentPath, User: run.User, CreatedAt: now}); err != nil {
			return err
		}
		if err := tx.InsertRun(ctx, run); err != nil {
			return err
		}
		id, err := s.q.insertTx(ctx, tx, TrainArgs{Run: name})
		if err != nil {
			return err
		}
		run.JobID = id
		if _, err := tx.UpdateRun(ctx, name, store.RunCond{}, store.RunUpdate{JobID: &id}); err != nil {
			return err
		}
		for _, e := range []store.Event{
			{Time: now, Type: string(store.StatusPending), Message: fmt.Sprintf("run created by %s from %s; will register to %s", run.User, p.Model.Ref, p.Target)},
			{Time: now, Type: string(store.StatusQueued), Message: "inputs validated; waiting for a worker"},
		} {
			if err := tx.AddEvent(ctx, name, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create run: %w", err)
	}
	s.log.Info("run created", "run", name, "user", run.User, "model", p.Model.Ref, "register_to", p.Target)
	return s.Get(ctx, name)
}

// prepare checks and normalises req, confines its paths, resolves the model
// and builds the training spec.
func (s *Service) prepare(ctx context.Context, req *client.CreateRunRequest) (*params, error) {
	if req.User == "" {
		req.User = s.cfg.DefaultUser
	}
	if strings.ContainsAny(req.User, "/\x00") {
		return nil, invalidf("user %q must not contain /", req.User)
	}
	if req.ExperimentPath == "" {
		req.ExperimentPath = "/Users/" + req.User + "/hone"
	}
	if !strings.HasPrefix(req.ExperimentPath, "/") {
		return nil, invalidf("experiment_path %q must start with /", req.ExperimentPath)
	}
	if req.TaskType == "" {
		req.TaskType = client.TaskChatCompletion
	}
	task, ok := taskNames[req.TaskType]
	if !ok {
		return nil, invalidf("task_type %q: want CHAT_COMPLETION, INSTRUCTION_FINETUNE or CONTINUED_PRETRAIN", req.TaskType)
	}
	if req.TrainingDuration == "" {
		req.TrainingDuration = "1ep"
	}
	dur, err := train.ParseDuration(req.TrainingDuration)
	if err != nil {
		return nil, invalidf("%v", err)
	}
	if req.LearningRate == 0 {
		req.LearningRate = DefaultLearningRate
	}
	if !(req.LearningRate > 0) || math.IsInf(req.LearningRate, 0) || req.LearningRate > 1 {
		return nil, invalidf("learning_rate %g must be in (0, 1]", req.LearningRate)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"context_length", req.ContextLength}, {"batch_rows", req.BatchRows}, {"grad_accum", req.GradAccum},
		{"checkpoint_every", req.CheckpointEvery}, {"keep_checkpoints", req.KeepCheckpoints}} {
		if f.v < 0 {
			return nil, invalidf("%s %d must not be negative", f.name, f.v)
		}
	}
	if req.RegisterTo == "" {
		return nil, invalidf("register_to is required: catalog.schema or catalog.schema.model")
	}
	if req.TrainDataPath == "" {
		return nil, invalidf("train_data_path is required")
	}
	spec := train.Spec{Task: task, Duration: dur, LearningRate: req.LearningRate, ContextLength: req.ContextLength,
		BatchRows: req.BatchRows, GradAccum: req.GradAccum, Seed: req.Seed, CheckpointEvery: req.CheckpointEvery,
		KeepCheckpoints: req.KeepCheckpoints, EvalPrompts: req.EvalPrompts, Precision: req.Precision}
	if req.Precision != "" && req.Precision != "fp32" && req.Precision != "bf16" {
		return nil, invalidf("precision %q: want fp32 or bf16", req.Precision)
	}
	if spec.TrainData, err = s.confineField("train_data_path", req.TrainDataPath); err != nil {
		return nil, err
	}
	if req.EvalDataPath != "" {
		if spec.EvalData, err = s.confineField("eval_data_path", req.EvalDataPath); err != nil {
			return nil, err
		}
	}
	if req.CustomWeightsPath != "" {
		if spec.InitWeights, err = s.confineField("custom_weights_path", req.CustomWeightsPath); err != nil {
			return nil, err
		}
	}
	if o := req.Optimizer; o != nil {
		if o.Beta1 != 0 || o.Beta2 != 0 || o.Eps != 0 || o.WeightDecay != 0 || o.MaxGradNorm != 0 {
			a := optim.DefaultAdamW
			set := func(dst *float64, v float64) {
				if v != 0 {
					*dst = v
				}
			}
			set(&a.Beta1, o.Beta1)
			set(&a.Beta2, o.Beta2)
			set(&a.Eps, o.Eps)
			set(&a.WeightDecay, o.WeightDecay)
			set(&a.MaxGradNorm, o.MaxGradNorm)
			if err := a.Validate(); err != nil {
				return nil, invalidf("optimizer: %v", err)
			}
			spec.AdamW = a
		}
		if o.Decay != "" && o.Decay != "linear" && o.Decay != "cosine" {
			return nil, invalidf("optimizer.decay %q: want linear or cosine", o.Decay)
		}
		if o.WarmupFrac < 0 || o.WarmupFrac >= 1 || o.FinalLRMult < 0 || o.FinalLRMult > 1 {
			return nil, invalidf("optimizer: warmup_frac must be in [0, 1) and final_lr_mult in [0, 1]")
		}
		spec.WarmupFrac, spec.Decay, spec.FinalLRMult = o.WarmupFrac, o.Decay, o.FinalLRMult
	}
	m, err := s.models.Resolve(ctx, req.Model)
	if err != nil {
		if errors.Is(err, modelref.ErrInvalid) || errors.Is(err, ErrInvalid) {
			return nil, invalidf("%v", err)
		}
		return nil, err
	}
	if req.ContextLength > m.MaxContext && m.MaxContext > 0 {
		return nil, invalidf("context_length %d exceeds the model's maximum %d", req.ContextLength, m.MaxContext)
	}
	spec.ModelDir = m.Dir
	return &params{Request: *req, Model: *m, Spec: spec}, nil
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
