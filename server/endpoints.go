package server

import (
	"context"
	"net/http"

	"hone/catalog"
	"hone/client"
	"hone/store"
)

// endpointRoutes serve the endpoints API: names under which a version, or
// whatever version an alias points at, answers /api/generate and /v1.
func (s *Server) endpointRoutes() {
	m := s.mux
	m.HandleFunc("POST /api/endpoints", s.handler(201, func(r *http.Request) (any, error) {
		var req client.CreateEndpointRequest
		if err := s.decode(r, &req); err != nil {
			return nil, err
		}
		e, err := s.cat.CreateEndpoint(r.Context(), req.Name, req.Model)
		if err != nil {
			return nil, err
		}
		return endpointView(*e), nil
	}))
	m.HandleFunc("GET /api/endpoints", s.handler(200, paged(func(r *http.Request, p client.PageOptions) (any, error) {
		es, next, err := s.cat.PageEndpoints(r.Context(), store.Page{Limit: p.Limit, Token: p.PageToken})
		if err != nil {
			return nil, err
		}
		out := &client.EndpointList{Endpoints: make([]client.Endpoint, 0, len(es)), NextPageToken: next}
		for _, e := range es {
			out.Endpoints = append(out.Endpoints, endpointView(e))
		}
		return out, nil
	})))
	m.HandleFunc("GET /api/endpoints/{name}", s.handler(200, func(r *http.Request) (any, error) {
		e, err := s.cat.GetEndpoint(r.Context(), r.PathValue("name"))
		if err != nil {
			return nil, err
		}
		return endpointView(*e), nil
	}))
	m.HandleFunc("DELETE /api/endpoints/{name}", s.handler(204, func(r *http.Request) (any, error) {
		return nil, s.cat.DeleteEndpoint(r.Context(), r.PathValue("name"))
	}))
}

func endpointView(e catalog.Endpoint) client.Endpoint {
	out := client.Endpoint{Name: e.Name, Model: e.Model, State: e.State, StateMessage: e.Reason, CreatedAt: e.CreatedAt}
	if e.Version != nil {
		out.Version, out.ServedModel = e.Version.Version, versionID(*e.Version)
	}
	return out
}

// endpointModels lists every endpoint as an OpenAI model id.
func (s *Server) endpointModels(ctx context.Context) ([]oaiModel, error) {
	out := []oaiModel{}
	p := store.Page{Limit: 1000}
	for {
		es, next, err := s.cat.PageEndpoints(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			out = append(out, oaiModel{ID: e.Name, Object: "model", Created: e.CreatedAt.Unix(), OwnedBy: "hone"})
		}
		if next == "" {
			return out, nil
		}
		p.Token = next
	}
}
