package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"hone/dataset"
	"hone/train"
)

// Trainer is what the service needs of package train. Validate checks spec
// and data without training (returning the data report's summary, also
// alongside the error when the data is refused, if a report was made); Run
// trains in workDir, resuming from a checkpoint there, and stops within one
// step of ctx being cancelled, returning ctx's error after saving a stop
// checkpoint. Config.Trainer defaults to package train itself; tests
// substitute a scripted trainer to drive the state machine.
type Trainer interface {
	Validate(ctx context.Context, spec train.Spec) (summary string, err error)
	Run(ctx context.Context, spec train.Spec, workDir string, obs train.Observer) (*train.Result, error)
}

// progressValidator is a Trainer whose Validate also reports the data's
// progress (optional: a trainer without it gets time-only progress events).
type progressValidator interface {
	ValidateProgress(ctx context.Context, spec train.Spec, progress func(dataset.Progress)) (summary string, err error)
}

// trainPackage is the production Trainer: train.Validate and train.Run.
type trainPackage struct{}

var _ Trainer = trainPackage{}

// Validate runs train.Validate and summarises its data report as JSON,
// also when the data is refused (the report lists the bad records).
func (t trainPackage) Validate(ctx context.Context, spec train.Spec) (string, error) {
	return t.ValidateProgress(ctx, spec, nil)
}

// ValidateProgress is Validate reporting progress as train.ValidateProgress.
func (trainPackage) ValidateProgress(ctx context.Context, spec train.Spec, progress func(dataset.Progress)) (string, error) {
	rep, err := train.ValidateProgress(ctx, spec, progress)
	if rep == nil {
		return "", err
	}
	b, merr := json.Marshal(rep)
	if merr != nil {
		return "", errors.Join(err, fmt.Errorf("summarise the data report: %w", merr))
	}
	return string(b), err
}

func (trainPackage) Run(ctx context.Context, spec train.Spec, workDir string, obs train.Observer) (*train.Result, error) {
	return train.Run(ctx, spec, workDir, obs)
}
