package runs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"

	"hone/catalog"
	"hone/client"
	"hone/settings"
)

// check validates req as Create does: the parameters, the register_to
// target and, when data is set, the training and eval data. It returns the
// resolved parameters and the new run's name. On refused data the returned
// params still carry the data report's summary (when the trainer made one).
func (s *Service) check(ctx context.Context, req *client.CreateRunRequest, data bool) (*params, string, error) {
	p, err := s.prepare(ctx, req)
	if err != nil {
		return nil, "", err
	}
	if err := s.checkNodes(ctx, req); err != nil {
		return nil, "", err
	}
	name := runName(p.Model.BaseModel)
	target, err := s.cat.CheckTarget(ctx, req.RegisterTo, name)
	if err != nil {
		if errors.Is(err, catalog.ErrInvalid) {
			return nil, "", invalidf("%v", err)
		}
		return nil, "", err
	}
	p.Target = target.String()
	if data {
		if err := s.checkData(ctx, p); err != nil {
			if errors.Is(err, ErrInvalid) {
				return p, "", err
			}
			return nil, "", err
		}
	}
	return p, name, nil
}

// checkData validates p's training and eval data, putting the report's
// summary in p.Validation.
func (s *Service) checkData(ctx context.Context, p *params) error {
	summary, err := s.tr.Validate(ctx, p.planned())
	p.Validation = summary
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return invalidf("%v", err)
	}
	return nil
}

// Validate checks req exactly as Create would, data included, without
// creating anything. A request Create would refuse is reported in the
// result (OK false, Error naming the field or file:line); the error is for
// failures of the check itself.
func (s *Service) Validate(ctx context.Context, req client.CreateRunRequest) (*client.RunValidation, error) {
	p, _, err := s.check(ctx, &req, true)
	out := &client.RunValidation{OK: err == nil, Request: req}
	if p != nil { // show the settings the run would train with
		sp := p.Spec
		out.Request.LearningRate, out.Request.BatchRows, out.Request.GradAccum = sp.LearningRate, sp.BatchRows, sp.GradAccum
		out.Request.CheckpointEvery, out.Request.KeepCheckpoints, out.Request.Precision = sp.CheckpointEvery, sp.KeepCheckpoints, sp.Precision
		out.Request.Method, out.Request.LoRA = showLoRA(sp)
		out.Request.Optimizer = showOptimizer(sp, out.Request.Optimizer)
		out.Request.Sharding = cmp.Or(out.Request.Sharding, settings.Sharding)
	}
	if p != nil && p.Validation != "" {
		if json.Valid([]byte(p.Validation)) {
			out.Report = json.RawMessage(p.Validation)
		} else {
			out.Report, _ = json.Marshal(p.Validation) // a trainer's plain-text summary
		}
	}
	if err != nil {
		if !errors.Is(err, ErrInvalid) {
			return nil, err
		}
		out.Error = err.Error()
	}
	return out, nil
}
