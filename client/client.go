// Package client is hone's public Go client and the API's wire types: the
// hone CLI uses only this package, and so can any other program.
//
// A *Client is safe for concurrent use. Every method honours ctx. Non-2xx
// responses are returned as *Error, whose Status is the HTTP status and
// whose Message is the server's reason (file:line for refused data).
//
// Growing lists are paged: ListRuns, ListEvents, ListCheckpoints,
// ListPromptOutputs, ListExperiments, ListMetrics and ListEndpoints return
// one page and its NextPageToken; Events, Checkpoints, PromptOutputs,
// Experiments, Metrics and Endpoints follow the pages to the end. Empty lists are empty slices.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultServer is where hone serve listens by default.
const DefaultServer = "http://127.0.0.1:8080"

// Config configures a Client.
type Config struct {
	Server     string // base URL; default DefaultServer
	Token      string // bearer token, if the server requires one
	HTTPClient *http.Client
}

// Client talks to a hone server.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// New validates cfg.
func New(cfg Config) (*Client, error) {
	if cfg.Server == "" {
		cfg.Server = DefaultServer
	}
	u, err := url.Parse(strings.TrimRight(cfg.Server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: server %q: want http(s)://host:port", cfg.Server)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	return &Client{base: u, token: cfg.Token, hc: cfg.HTTPClient}, nil
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	var body io.Reader
	contentType := "application/json"
	if r, ok := in.(io.Reader); ok {
		body, contentType = r, "application/octet-stream" // a file upload, sent as is
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}

// StatusOf returns the HTTP status of an API error, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// CreateRun validates and queues a run.
func (c *Client) CreateRun(ctx context.Context, req CreateRunRequest) (*Run, error) {
	var out Run
	return &out, c.do(ctx, http.MethodPost, "/api/runs", nil, req, &out)
}

// GetRun returns a run with its events, checkpoints and latest metrics.
func (c *Client) GetRun(ctx context.Context, name string) (*Run, error) {
	var out Run
	return &out, c.do(ctx, http.MethodGet, "/api/runs/"+url.PathEscape(name), nil, nil, &out)
}

// ListRuns returns one page of runs, newest first.
func (c *Client) ListRuns(ctx context.Context, o ListRunsOptions) (*RunList, error) {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("user", o.User)
	set("experiment_path", o.ExperimentPath)
	set("status", strings.Join(o.Status, ","))
	set("page_token", o.PageToken)
	if !o.CreatedAfter.IsZero() {
		q.Set("created_after", o.CreatedAfter.UTC().Format(time.RFC3339Nano))
	}
	if !o.CreatedBefore.IsZero() {
		q.Set("created_before", o.CreatedBefore.UTC().Format(time.RFC3339Nano))
	}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var out RunList
	return &out, c.do(ctx, http.MethodGet, "/api/runs", q, nil, &out)
}

// CancelRuns cancels the named runs or every active run of an experiment.
func (c *Client) CancelRuns(ctx context.Context, req CancelRequest) (*CancelResult, error) {
	var out CancelResult
	return &out, c.do(ctx, http.MethodPost, "/api/runs/cancel", nil, req, &out)
}

// ResumeRun re-queues a STOPPED or FAILED run; it continues from its last
// checkpoint.
func (c *Client) ResumeRun(ctx context.Context, name string) (*Run, error) {
	var out Run
	return &out, c.do(ctx, http.MethodPost, "/api/runs/"+url.PathEscape(name)+"/resume", nil, nil, &out)
}

// DeleteRun deletes a finished or cancelled run.
func (c *Client) DeleteRun(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/runs/"+url.PathEscape(name), nil, nil, nil)
}

// ListEvents returns one page of the run's events, oldest first.
func (c *Client) ListEvents(ctx context.Context, name string, o ListEventsOptions) (*EventList, error) {
	q := pageQuery(o.PageOptions)
	if o.After > 0 {
		q.Set("after", strconv.FormatInt(o.After, 10))
	}
	var out EventList
	return &out, c.do(ctx, http.MethodGet, "/api/runs/"+url.PathEscape(name)+"/events", q, nil, &out)
}

// Events returns all of the run's events with ID greater than after.
func (c *Client) Events(ctx context.Context, name string, after int64) ([]Event, error) {
	return collect(func(tok string) ([]Event, string, error) {
		l, err := c.ListEvents(ctx, name, ListEventsOptions{After: after, PageOptions: PageOptions{Limit: 1000, PageToken: tok}})
		return l.Events, l.NextPageToken, err
	})
}

// ListMetrics returns one page of the run's step series with the
// evaluations of the same steps.
func (c *Client) ListMetrics(ctx context.Context, name string, o PageOptions) (*Metrics, error) {
	var out Metrics
	return &out, c.do(ctx, http.MethodGet, "/api/runs/"+url.PathEscape(name)+"/metrics", pageQuery(o), nil, &out)
}

// Metrics returns the run's whole step and eval series.
func (c *Client) Metrics(ctx context.Context, name string) (*Metrics, error) {
	out := &Metrics{Steps: []StepMetric{}, Evals: []EvalMetric{}}
	o := PageOptions{Limit: 1000}
	for {
		page, err := c.ListMetrics(ctx, name, o)
		if err != nil {
			return nil, err
		}
		out.Steps, out.Evals = append(out.Steps, page.Steps...), append(out.Evals, page.Evals...)
		if page.NextPageToken == "" || page.NextPageToken == o.PageToken {
			return out, nil
		}
		o.PageToken = page.NextPageToken
	}
}

// ListCheckpoints returns one page of the run's checkpoints.
func (c *Client) ListCheckpoints(ctx context.Context, name string, o PageOptions) (*CheckpointList, error) {
	var out CheckpointList
	return &out, c.do(ctx, http.MethodGet, "/api/runs/"+url.PathEscape(name)+"/checkpoints", pageQuery(o), nil, &out)
}

// Checkpoints returns all of the run's checkpoints.
func (c *Client) Checkpoints(ctx context.Context, name string) ([]Checkpoint, error) {
	return collect(func(tok string) ([]Checkpoint, string, error) {
		l, err := c.ListCheckpoints(ctx, name, PageOptions{Limit: 1000, PageToken: tok})
		return l.Checkpoints, l.NextPageToken, err
	})
}

// ListPromptOutputs returns one page of the run's eval-prompt completions.
func (c *Client) ListPromptOutputs(ctx context.Context, name string, o PageOptions) (*PromptOutputList, error) {
	var out PromptOutputList
	return &out, c.do(ctx, http.MethodGet, "/api/runs/"+url.PathEscape(name)+"/prompt-outputs", pageQuery(o), nil, &out)
}

// PromptOutputs returns all of the run's eval-prompt completions.
func (c *Client) PromptOutputs(ctx context.Context, name string) ([]PromptOutput, error) {
	return collect(func(tok string) ([]PromptOutput, string, error) {
		l, err := c.ListPromptOutputs(ctx, name, PageOptions{Limit: 1000, PageToken: tok})
		return l.PromptOutputs, l.NextPageToken, err
	})
}

// ListExperiments returns one page of experiments.
func (c *Client) ListExperiments(ctx context.Context, o PageOptions) (*ExperimentList, error) {
	var out ExperimentList
	return &out, c.do(ctx, http.MethodGet, "/api/experiments", pageQuery(o), nil, &out)
}

// Experiments returns all experiments.
func (c *Client) Experiments(ctx context.Context) ([]Experiment, error) {
	return collect(func(tok string) ([]Experiment, string, error) {
		l, err := c.ListExperiments(ctx, PageOptions{Limit: 1000, PageToken: tok})
		return l.Experiments, l.NextPageToken, err
	})
}

// SupportedModels returns the supported base models table.
func (c *Client) SupportedModels(ctx context.Context) ([]SupportedModel, error) {
	var out SupportedModelList
	return out.Models, c.do(ctx, http.MethodGet, "/api/models", nil, nil, &out)
}

func pageQuery(o PageOptions) url.Values {
	q := url.Values{}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.PageToken != "" {
		q.Set("page_token", o.PageToken)
	}
	return q
}

// collect follows page tokens from the first page to the last.
func collect[T any](page func(token string) ([]T, string, error)) ([]T, error) {
	out := []T{}
	tok := ""
	for {
		items, next, err := page(tok)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if next == "" || next == tok {
			return out, nil
		}
		tok = next
	}
}

// CreateCatalog creates a catalog ("main") or a schema ("main.demo").
func (c *Client) CreateCatalog(ctx context.Context, name, comment string) error {
	return c.do(ctx, http.MethodPost, "/api/catalog", nil, CreateCatalogRequest{Name: name, Comment: comment}, nil)
}

// ShowModel returns a registered model's versions.
func (c *Client) ShowModel(ctx context.Context, name string) (*Model, error) {
	var out Model
	return &out, c.do(ctx, http.MethodGet, "/api/catalog/models/"+url.PathEscape(name), nil, nil, &out)
}

// SetAlias points alias at a version of the model.
func (c *Client) SetAlias(ctx context.Context, model string, version int, alias string) (*Model, error) {
	var out Model
	return &out, c.do(ctx, http.MethodPut, "/api/catalog/models/"+url.PathEscape(model)+"/aliases/"+url.PathEscape(alias),
		nil, AliasRequest{Version: version}, &out)
}

// RemoveAlias removes an alias from the model.
func (c *Client) RemoveAlias(ctx context.Context, model, alias string) error {
	return c.do(ctx, http.MethodDelete, "/api/catalog/models/"+url.PathEscape(model)+"/aliases/"+url.PathEscape(alias), nil, nil, nil)
}

// Generate completes a prompt or a conversation with a registered model
// version on the server.
func (c *Client) Generate(ctx context.Context, req GenerateRequest) (*GenerateResponse, error) {
	var out GenerateResponse
	return &out, c.do(ctx, http.MethodPost, "/api/generate", nil, req, &out)
}

// WaitRun polls until the run reaches a terminal state, calling progress
// (if non-nil) with each poll's run. It returns the final run.
func (c *Client) WaitRun(ctx context.Context, name string, every time.Duration, progress func(*Run)) (*Run, error) {
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		r, err := c.GetRun(ctx, name)
		if err != nil {
			return nil, err
		}
		if progress != nil {
			progress(r)
		}
		if Terminal(r.Status) {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-t.C:
		}
	}
}
