package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Endpoint states.
const (
	EndpointReady    = "READY"     // its model reference resolves to a version
	EndpointNotReady = "NOT_READY" // the alias or version it names is gone
)

// CreateEndpointRequest creates a serving endpoint.
type CreateEndpointRequest struct {
	// Name is a letter, digit or _ followed by up to 127 of those or -.
	Name string `json:"name"`
	// Model is a version, "catalog.schema.model/N", or an alias,
	// "catalog.schema.model@alias", which the endpoint follows as it moves.
	Model string `json:"model"`
}

// Endpoint is a name under which a registered model answers, at
// /api/generate and /v1 as the request's model.
type Endpoint struct {
	Name  string `json:"name"`
	Model string `json:"model"` // the reference as created
	// Version is the version answering new requests now (0 when
	// NOT_READY); ServedModel names it, "catalog.schema.model/N".
	Version     int    `json:"version,omitempty"`
	ServedModel string `json:"served_model,omitempty"`
	State       string `json:"state"` // EndpointReady or EndpointNotReady
	// StateMessage says why an endpoint is NOT_READY.
	StateMessage string    `json:"state_message,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

// EndpointList is one page of endpoints, by name.
type EndpointList struct {
	Endpoints     []Endpoint `json:"endpoints"`
	NextPageToken string     `json:"next_page_token,omitempty"`
}

// CreateEndpoint creates a serving endpoint; its model must resolve now.
func (c *Client) CreateEndpoint(ctx context.Context, req CreateEndpointRequest) (*Endpoint, error) {
	var out Endpoint
	return &out, c.do(ctx, http.MethodPost, "/api/endpoints", nil, req, &out)
}

// GetEndpoint returns an endpoint with the version serving it now.
func (c *Client) GetEndpoint(ctx context.Context, name string) (*Endpoint, error) {
	var out Endpoint
	return &out, c.do(ctx, http.MethodGet, "/api/endpoints/"+url.PathEscape(name), nil, nil, &out)
}

// ListEndpoints returns one page of endpoints, by name.
func (c *Client) ListEndpoints(ctx context.Context, o PageOptions) (*EndpointList, error) {
	var out EndpointList
	return &out, c.do(ctx, http.MethodGet, "/api/endpoints", pageQuery(o), nil, &out)
}

// Endpoints returns all endpoints.
func (c *Client) Endpoints(ctx context.Context) ([]Endpoint, error) {
	return collect(func(tok string) ([]Endpoint, string, error) {
		l, err := c.ListEndpoints(ctx, PageOptions{Limit: 1000, PageToken: tok})
		return l.Endpoints, l.NextPageToken, err
	})
}

// DeleteEndpoint deletes an endpoint; the model it serves stays.
func (c *Client) DeleteEndpoint(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/endpoints/"+url.PathEscape(name), nil, nil, nil)
}
