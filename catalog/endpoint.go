package catalog

import (
	"context"
	"errors"
	"fmt"

	"hone/client"
	"hone/store"
)

// Endpoint states: READY when its model reference resolves to a version,
// NOT_READY when the alias or version it names is gone.
const (
	EndpointReady    = client.EndpointReady
	EndpointNotReady = client.EndpointNotReady
)

// Endpoint is a serving endpoint with what its model reference resolves
// to now.
type Endpoint struct {
	store.Endpoint
	State string
	// Version is the version serving the endpoint's requests now; nil
	// when NOT_READY, and then Reason says why.
	Version *store.ModelVersion
	Reason  string
}

// ValidEndpointName reports whether s can name an endpoint: a letter,
// digit or underscore followed by up to 127 of those or hyphens, like one
// part of a catalog name. Without dots, slashes or @, it cannot be taken
// for a model reference.
func ValidEndpointName(s string) bool { return identRE.MatchString(s) }

// parseEndpointModel reads an endpoint's model reference: a version or an
// alias.
func parseEndpointModel(model string) (Ref, error) {
	ref, ok, err := ParseRef(model)
	if err != nil {
		return Ref{}, err
	}
	if !ok {
		return Ref{}, invalidf("model %q: want catalog.schema.model/N (one version) or catalog.schema.model@alias (follows the alias)", model)
	}
	return ref, nil
}

// CreateEndpoint creates an endpoint serving model, a version reference
// ("main.demo.bot/3") or an alias ("main.demo.bot@champion", followed as
// it moves). The reference must resolve now.
func (c *Catalog) CreateEndpoint(ctx context.Context, name, model string) (*Endpoint, error) {
	if !ValidEndpointName(name) {
		return nil, invalidf("endpoint name %q: letters, digits, _ or - (not starting with -), at most 128", name)
	}
	ref, err := parseEndpointModel(model)
	if err != nil {
		return nil, err
	}
	if _, err := c.Resolve(ctx, ref); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, invalidf("endpoint %s: model %s does not resolve: %v", name, model, err)
		}
		return nil, err
	}
	if err := c.st.CreateEndpoint(ctx, store.Endpoint{Name: name, Model: model, CreatedAt: c.clock()}); err != nil {
		return nil, err
	}
	return c.GetEndpoint(ctx, name)
}

// GetEndpoint reads an endpoint and resolves its model reference.
func (c *Catalog) GetEndpoint(ctx context.Context, name string) (*Endpoint, error) {
	e, err := c.st.GetEndpoint(ctx, name)
	if err != nil {
		return nil, err
	}
	return c.withState(ctx, *e)
}

// PageEndpoints returns one page of the endpoints by name, each with its
// state, and the next page's token ("" after the last).
func (c *Catalog) PageEndpoints(ctx context.Context, p store.Page) ([]Endpoint, string, error) {
	es, next, err := c.st.PageEndpoints(ctx, p)
	if err != nil {
		return nil, "", err
	}
	out := make([]Endpoint, 0, len(es))
	for _, e := range es {
		s, err := c.withState(ctx, e)
		if err != nil {
			return nil, "", err
		}
		out = append(out, *s)
	}
	return out, next, nil
}

// DeleteEndpoint removes an endpoint; its model and versions stay.
func (c *Catalog) DeleteEndpoint(ctx context.Context, name string) error {
	return c.st.DeleteEndpoint(ctx, name)
}

// ServeEndpoint returns the version that answers a request to the
// endpoint now; ErrNotFound, naming the endpoint, when there is no such
// endpoint or it is NOT_READY. Callers resolve once per request: a request
// keeps the version it started with while the alias moves.
func (c *Catalog) ServeEndpoint(ctx context.Context, name string) (*store.ModelVersion, error) {
	e, err := c.GetEndpoint(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("model %q: no endpoint of that name (hone endpoints list), nor a registered version "+
			"catalog.schema.model[/N|@alias]: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if e.Version == nil {
		return nil, fmt.Errorf("endpoint %s is %s: %s: %w", name, e.State, e.Reason, store.ErrNotFound)
	}
	return e.Version, nil
}

// withState resolves e's model reference: READY with the version, or
// NOT_READY with the reason when the alias or version is gone.
func (c *Catalog) withState(ctx context.Context, e store.Endpoint) (*Endpoint, error) {
	out := &Endpoint{Endpoint: e, State: EndpointNotReady}
	ref, err := parseEndpointModel(e.Model)
	if err != nil { // stored by CreateEndpoint, which checked it
		out.Reason = err.Error()
		return out, nil
	}
	v, err := c.Resolve(ctx, ref)
	switch {
	case errors.Is(err, store.ErrNotFound):
		out.Reason = fmt.Sprintf("model %s does not resolve: %v", e.Model, err)
		return out, nil
	case err != nil:
		return nil, fmt.Errorf("endpoint %s: resolve %s: %w", e.Name, e.Model, err)
	}
	out.State, out.Version = EndpointReady, v
	return out, nil
}
