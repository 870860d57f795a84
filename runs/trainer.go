package runs

import (
	"context"
	"encoding/json"
	"fmt"

	"hone/train"
)

// Trainer is what the service needs of package train. Validate checks spec
// and data without training (returning the data report's summary); Run
// trains in workDir, resuming from a checkpoint there, and stops within one
// step of ctx being cancelled, returning ctx's error after saving a stop
// checkpoint. Config.Trainer defaults to package train itself; tests
// substitute a scripted trainer to drive the state machine.
type Trainer interface {
	Validate(ctx context.Context, spec train.Spec) (summary string, err error)
	Run(ctx context.Context, spec train.Spec, workDir string, obs train.Observer) (*train.Result, error)
}

// trainPackage is the production Trainer: train.Validate and train.Run.
type trainPackage struct{}

var _ Trainer = trainPackage{}

// Validate runs train.Validate and summarises its data report as JSON.
func (trainPackage) Validate(ctx context.Context, spec train.Spec) (string, error) {
	rep, err := train.Validate(ctx, spec)
	if err != nil || rep == nil {
		return "", err
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return "", fmt.Errorf("summarise the data report: %w", err)
	}
	return string(b), nil
}

func (trainPackage) Run(ctx context.Context, spec train.Spec, workDir string, obs train.Observer) (*train.Result, error) {
	return train.Run(ctx, spec, workDir, obs)
}
