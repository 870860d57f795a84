package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"hone/client"
	"hone/store"
	"hone/train"
)

// MaxSweepRuns bounds a sweep's grid.
const MaxSweepRuns = 64

// sweepParams is what a sweep stores: the request as given, with the run
// defaults it resolved to.
type sweepParams struct {
	Request client.CreateSweepRequest `json:"request"`
}

// CreateSweep checks every run of the grid (the data once: every run reads
// the same), then inserts the sweep and all its runs in one transaction:
// a refused grid point leaves nothing behind. The runs share one
// experiment, experiment_path or else /Users/<user>/hone/<sweep name>.
func (s *Service) CreateSweep(ctx context.Context, req client.CreateSweepRequest) (*client.Sweep, error) {
	lrs, durs := req.LearningRate, req.TrainingDuration
	if req.CreateRunRequest.LearningRate != 0 || req.CreateRunRequest.TrainingDuration != "" {
		return nil, invalidf("learning_rate and training_duration of a sweep are lists, e.g. [1e-5, 3e-5] and [\"1ep\", \"3ep\"]")
	}
	for i, lr := range lrs {
		if slices.Contains(lrs[:i], lr) {
			return nil, invalidf("learning_rate: %g is repeated; name each value once", lr)
		}
	}
	for i, d := range durs {
		if _, err := train.ParseDuration(d); err != nil {
			return nil, invalidf("training_duration[%d]: %v", i, err)
		}
		if slices.Contains(durs[:i], d) {
			return nil, invalidf("training_duration: %q is repeated; name each value once", d)
		}
	}
	if len(lrs) == 0 {
		lrs = []float64{0} // the run's default
	}
	if len(durs) == 0 {
		durs = []string{""}
	}
	if n := len(lrs) * len(durs); n > MaxSweepRuns {
		return nil, invalidf("the sweep has %d runs (%d learning rates × %d durations); at most %d", n, len(lrs), len(durs), MaxSweepRuns)
	}
	base := req.CreateRunRequest
	if base.User == "" {
		base.User = s.cfg.DefaultUser
	}
	if err := checkName("user", base.User); err != nil {
		return nil, err
	}
	name := "sweep-" + runName(base.Model)
	if base.ExperimentPath == "" {
		base.ExperimentPath = "/Users/" + base.User + "/hone/" + name
	}
	validate := base.ValidateInputs == nil || *base.ValidateInputs
	var ps []*params
	var names []string
	for _, lr := range lrs {
		for _, d := range durs {
			r := base
			r.LearningRate, r.TrainingDuration = lr, d
			p, n, err := s.check(ctx, &r, validate && len(ps) == 0)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", cellName(lr, d), err)
			}
			if slices.Contains(names, n) {
				return nil, fmt.Errorf("sweep: two runs drew the name %s; try again", n)
			}
			ps, names = append(ps, p), append(names, n)
		}
	}
	req.CreateRunRequest = base
	raw, err := json.Marshal(sweepParams{Request: req})
	if err != nil {
		return nil, fmt.Errorf("runs: encode sweep: %w", err)
	}
	now := s.clock()
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.InsertSweep(ctx, &store.Sweep{Name: name, User: base.User, ExperimentPath: base.ExperimentPath,
			Params: string(raw), CreatedAt: now, Runs: names}); err != nil {
			return err
		}
		for i, p := range ps {
			if err := s.insertRun(ctx, tx, p, names[i], now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create sweep: %w", err)
	}
	s.log.Info("sweep created", "sweep", name, "user", base.User, "runs", len(names))
	return s.GetSweep(ctx, name)
}

// cellName names a grid point in errors.
func cellName(lr float64, d string) string {
	l, dur := "default", "default"
	if lr != 0 {
		l = strconv.FormatFloat(lr, 'g', -1, 64)
	}
	if d != "" {
		dur = d
	}
	return fmt.Sprintf("sweep run learning_rate %s, training_duration %s", l, dur)
}

// GetSweep returns a sweep with each run's state and final losses and the
// best completed run.
func (s *Service) GetSweep(ctx context.Context, name string) (*client.Sweep, error) {
	sw, err := s.st.GetSweep(ctx, name)
	if err != nil {
		return nil, err
	}
	var p sweepParams
	if err := json.Unmarshal([]byte(sw.Params), &p); err != nil {
		return nil, fmt.Errorf("sweep %s: decode params: %w", name, err)
	}
	out := &client.Sweep{Name: sw.Name, User: sw.User, ExperimentPath: sw.ExperimentPath, CreatedAt: sw.CreatedAt,
		LearningRate: []float64{}, TrainingDuration: []string{}, Runs: []client.SweepRun{}}
	active, completed, failed := false, 0, false
	hasEval := false
	for _, n := range sw.Runs {
		r, err := s.Get(ctx, n)
		if errors.Is(err, store.ErrNotFound) {
			continue // deleted since
		}
		if err != nil {
			return nil, err
		}
		cell := client.SweepRun{Name: n, Status: r.Status, LearningRate: r.Config.LearningRate,
			TrainingDuration: r.Config.TrainingDuration, RegisteredModel: r.RegisteredModel, Error: r.Error}
		if pr, err := s.st.GetRun(ctx, n); err == nil {
			if rp, err := decodeParams(pr); err == nil {
				cell.LearningRate = rp.Spec.LearningRate // as resolved, the default included
			}
		}
		if m := r.Metrics; m != nil {
			cell.EvalLoss, cell.TrainLoss = m.EvalLoss, m.Loss
		}
		hasEval = hasEval || r.Config.EvalDataPath != ""
		switch {
		case !client.Terminal(r.Status):
			active = true
		case r.Status == client.StatusCompleted:
			completed++
		case r.Status == client.StatusFailed:
			failed = true
		}
		if !slices.Contains(out.LearningRate, cell.LearningRate) {
			out.LearningRate = append(out.LearningRate, cell.LearningRate)
		}
		if !slices.Contains(out.TrainingDuration, cell.TrainingDuration) {
			out.TrainingDuration = append(out.TrainingDuration, cell.TrainingDuration)
		}
		out.Runs = append(out.Runs, cell)
	}
	switch {
	case active:
		out.Status = client.StatusRunning
	case completed == len(out.Runs):
		out.Status = client.StatusCompleted
	case failed:
		out.Status = client.StatusFailed
	default:
		out.Status = client.StatusStopped
	}
	out.BestBy = "train_loss"
	if hasEval {
		out.BestBy = "eval_loss"
	}
	best := math.Inf(1)
	for _, c := range out.Runs {
		v := c.TrainLoss
		if hasEval {
			v = c.EvalLoss
		}
		if c.Status == client.StatusCompleted && v != nil && *v < best {
			best, out.Best = *v, c.Name
		}
	}
	if out.Best == "" {
		out.BestBy = ""
	}
	return out, nil
}

// ListSweeps returns up to 200 sweeps of user (all when ""), newest first.
func (s *Service) ListSweeps(ctx context.Context, user string) (*client.SweepList, error) {
	names, err := s.st.ListSweeps(ctx, user, 200)
	if err != nil {
		return nil, err
	}
	out := &client.SweepList{Sweeps: []client.Sweep{}}
	for _, n := range names {
		sw, err := s.GetSweep(ctx, n)
		if err != nil {
			return nil, err
		}
		out.Sweeps = append(out.Sweeps, *sw)
	}
	return out, nil
}

// CancelSweep cancels every run of the sweep that has not finished.
func (s *Service) CancelSweep(ctx context.Context, name string) (*client.Sweep, error) {
	sw, err := s.st.GetSweep(ctx, name)
	if err != nil {
		return nil, err
	}
	for _, n := range sw.Runs {
		if err := s.cancelOne(ctx, n); err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("cancel sweep %s: run %s: %w", name, n, err)
		}
	}
	return s.GetSweep(ctx, name)
}
