// Package worker connects the run service to package train: Trainer
// implements runs.Trainer with train.Validate and train.Run, translating
// train's observer calls one for one. It is the only place the service
// depends on the training code.
package worker

import (
	"context"
	"encoding/json"

	"hone/runs"
	"hone/train"
)

// Trainer is the production runs.Trainer.
type Trainer struct{}

var _ runs.Trainer = Trainer{}

// Validate runs train.Validate and summarises its data report as JSON,
// also when the data is refused (the report lists the bad records).
func (Trainer) Validate(ctx context.Context, spec train.Spec) (string, error) {
	rep, err := train.Validate(ctx, spec)
	if rep == nil {
		return "", err
	}
	b, merr := json.Marshal(rep)
	if merr != nil {
		return "", err
	}
	return string(b), err
}

// Run runs train.Run.
func (Trainer) Run(ctx context.Context, spec train.Spec, workDir string, obs runs.Observer) (*runs.Result, error) {
	res, err := train.Run(ctx, spec, workDir, observer{obs})
	if err != nil {
		return nil, err
	}
	out := runs.Result(*res)
	return &out, nil
}

type observer struct{ o runs.Observer }

func (a observer) OnStep(m train.StepMetrics)      { a.o.OnStep(runs.Step(m)) }
func (a observer) OnEval(m train.EvalMetrics)      { a.o.OnEval(runs.Eval(m)) }
func (a observer) OnCheckpoint(c train.Checkpoint) { a.o.OnCheckpoint(runs.Checkpoint(c)) }
func (a observer) OnLog(msg string)                { a.o.OnLog(msg) }
func (a observer) OnPromptOutputs(step int, outs []train.PromptOutput) {
	conv := make([]runs.PromptOutput, len(outs))
	for i, p := range outs {
		conv[i] = runs.PromptOutput(p)
	}
	a.o.OnPromptOutputs(step, conv)
}
