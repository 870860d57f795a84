package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// CreateSweepRequest is a run's parameters with lists where a run has one
// learning rate and one training duration: the sweep creates a run for
// every pair, in one experiment. An empty list means the run's default.
type CreateSweepRequest struct {
	CreateRunRequest
	LearningRate     []float64 `json:"learning_rate,omitempty"`
	TrainingDuration []string  `json:"training_duration,omitempty"`
}

// Sweep is a grid of runs as the API reports it: its runs in grid order
// (learning rates outer, durations inner), each with its final losses,
// and the best completed run.
type Sweep struct {
	Name             string     `json:"name"`
	User             string     `json:"user"`
	ExperimentPath   string     `json:"experiment_path"`
	Status           string     `json:"status"` // RUNNING while any run is active, else COMPLETED, FAILED or STOPPED
	CreatedAt        time.Time  `json:"created_at"`
	LearningRate     []float64  `json:"learning_rate"`
	TrainingDuration []string   `json:"training_duration"`
	Runs             []SweepRun `json:"runs"`
	// Best is the completed run with the lowest final eval loss (the
	// lowest final train loss when the sweep has no eval data, as BestBy
	// says); empty until one completes.
	Best   string `json:"best,omitempty"`
	BestBy string `json:"best_by,omitempty"` // "eval_loss" or "train_loss"
}

// SweepRun is one cell of a sweep's grid.
type SweepRun struct {
	Name             string   `json:"name"`
	Status           string   `json:"status"`
	LearningRate     float64  `json:"learning_rate"`
	TrainingDuration string   `json:"training_duration"`
	EvalLoss         *float64 `json:"eval_loss,omitempty"`  // the last evaluation's
	TrainLoss        *float64 `json:"train_loss,omitempty"` // the last step's
	RegisteredModel  string   `json:"registered_model,omitempty"`
	Error            string   `json:"error,omitempty"`
}

// SweepList is the sweeps, newest first.
type SweepList struct {
	Sweeps []Sweep `json:"sweeps"`
}

// CreateSweep creates every run of the grid, or none.
func (c *Client) CreateSweep(ctx context.Context, req CreateSweepRequest) (*Sweep, error) {
	var out Sweep
	return &out, c.do(ctx, http.MethodPost, "/api/sweeps", nil, req, &out)
}

// GetSweep returns a sweep with its runs' states and losses.
func (c *Client) GetSweep(ctx context.Context, name string) (*Sweep, error) {
	var out Sweep
	return &out, c.do(ctx, http.MethodGet, "/api/sweeps/"+url.PathEscape(name), nil, nil, &out)
}

// ListSweeps returns the sweeps of user (all users when ""), newest first.
func (c *Client) ListSweeps(ctx context.Context, user string) (*SweepList, error) {
	q := url.Values{}
	if user != "" {
		q.Set("user", user)
	}
	var out SweepList
	return &out, c.do(ctx, http.MethodGet, "/api/sweeps", q, nil, &out)
}

// CancelSweep cancels every active run of a sweep.
func (c *Client) CancelSweep(ctx context.Context, name string) (*Sweep, error) {
	var out Sweep
	return &out, c.do(ctx, http.MethodPost, "/api/sweeps/"+url.PathEscape(name)+"/cancel", nil, nil, &out)
}
