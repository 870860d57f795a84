package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"hone/client"
	"hone/engine"
	"hone/modelref"
	"hone/store"
)

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(openAPIDoc)) //nolint:errcheck // the client went away
	})
	s.healthRoutes()
	m.HandleFunc("GET /api/models", s.handler(200, func(*http.Request) (any, error) {
		out := &client.SupportedModelList{Models: []client.SupportedModel{}}
		for _, m := range modelref.SupportedModels() {
			out.Models = append(out.Models, client.SupportedModel(m))
		}
		return out, nil
	}))
	s.runRoutes()
	s.sweepRoutes()
	s.catalogRoutes()
	s.generateRoutes()
	s.openAIRoutes()
	s.uiRoutes()
	s.volumeRoutes()
	s.endpointRoutes()
	s.fineTuningRoutes()
	s.servingEndpointRoutes()
	s.ggufRoutes()
}

// runRoutes are the runs API: create, list, inspect, cancel, resume, delete.
func (s *Server) runRoutes() {
	m := s.mux
	m.HandleFunc("POST /api/runs", s.handler(201, func(r *http.Request) (any, error) {
		var req client.CreateRunRequest
		if err := s.decode(r, &req); err != nil {
			return nil, err
		}
		return s.runs.Create(r.Context(), req)
	}))
	m.HandleFunc("GET /api/runs", s.handler(200, s.listRuns))
	m.HandleFunc("GET /api/runs/{name}", s.handler(200, func(r *http.Request) (any, error) {
		return s.runs.Get(r.Context(), r.PathValue("name"))
	}))
	m.HandleFunc("DELETE /api/runs/{name}", s.handler(204, func(r *http.Request) (any, error) {
		return nil, s.runs.Delete(r.Context(), r.PathValue("name"))
	}))
	m.HandleFunc("POST /api/runs/{name}/cancel", s.handler(200, func(r *http.Request) (any, error) {
		return s.runs.Cancel(r.Context(), client.CancelRequest{Names: []string{r.PathValue("name")}})
	}))
	m.HandleFunc("POST /api/runs/{name}/resume", s.handler(200, func(r *http.Request) (any, error) {
		return s.runs.Resume(r.Context(), r.PathValue("name"))
	}))
	m.HandleFunc("POST /api/runs/cancel", s.handler(200, func(r *http.Request) (any, error) {
		var req client.CancelRequest
		if err := s.decode(r, &req); err != nil {
			return nil, err
		}
		return s.runs.Cancel(r.Context(), req)
	}))
	m.HandleFunc("GET /api/runs/{name}/events", s.handler(200, func(r *http.Request) (any, error) {
		after, err := queryInt(r, "after")
		if err != nil {
			return nil, err
		}
		p, err := queryPage(r)
		if err != nil {
			return nil, err
		}
		return s.runs.Events(r.Context(), r.PathValue("name"), client.ListEventsOptions{After: after, PageOptions: p})
	}))
	m.HandleFunc("GET /api/runs/{name}/metrics", s.handler(200, paged(func(r *http.Request, p client.PageOptions) (any, error) {
		return s.runs.Metrics(r.Context(), r.PathValue("name"), p)
	})))
	m.HandleFunc("GET /api/runs/{name}/checkpoints", s.handler(200, paged(func(r *http.Request, p client.PageOptions) (any, error) {
		return s.runs.Checkpoints(r.Context(), r.PathValue("name"), p)
	})))
	m.HandleFunc("GET /api/runs/{name}/prompt-outputs", s.handler(200, paged(func(r *http.Request, p client.PageOptions) (any, error) {
		return s.runs.PromptOutputs(r.Context(), r.PathValue("name"), p)
	})))
	m.HandleFunc("GET /api/experiments", s.handler(200, paged(func(r *http.Request, p client.PageOptions) (any, error) {
		return s.runs.Experiments(r.Context(), p)
	})))
}

// catalogRoutes are the catalog's: catalogs and schemas, models, aliases.
func (s *Server) catalogRoutes() {
	m := s.mux
	m.HandleFunc("POST /api/catalog", s.handler(201, func(r *http.Request) (any, error) {
		var req client.CreateCatalogRequest
		if err := s.decode(r, &req); err != nil {
			return nil, err
		}
		var err error
		if strings.Contains(req.Name, ".") {
			err = s.cat.CreateSchema(r.Context(), req.Name, req.Comment)
		} else {
			err = s.cat.CreateCatalog(r.Context(), req.Name, req.Comment)
		}
		return &client.Catalog{Name: req.Name, Comment: req.Comment}, err
	}))
	m.HandleFunc("GET /api/catalog/models/{name}", s.handler(200, func(r *http.Request) (any, error) {
		return s.showModel(r, r.PathValue("name"))
	}))
	m.HandleFunc("PUT /api/catalog/models/{name}/aliases/{alias}", s.handler(200, func(r *http.Request) (any, error) {
		var req client.AliasRequest
		if err := s.decode(r, &req); err != nil {
			return nil, err
		}
		if err := s.cat.SetAlias(r.Context(), r.PathValue("name"), req.Version, r.PathValue("alias")); err != nil {
			return nil, err
		}
		return s.showModel(r, r.PathValue("name"))
	}))
	m.HandleFunc("DELETE /api/catalog/models/{name}/aliases/{alias}", s.handler(204, func(r *http.Request) (any, error) {
		return nil, s.cat.RemoveAlias(r.Context(), r.PathValue("name"), r.PathValue("alias"))
	}))
}

func (s *Server) listRuns(r *http.Request) (any, error) {
	q := r.URL.Query()
	o := client.ListRunsOptions{User: q.Get("user"), ExperimentPath: q.Get("experiment_path"), PageToken: q.Get("page_token")}
	for _, st := range q["status"] {
		for _, one := range strings.Split(st, ",") {
			if one != "" {
				o.Status = append(o.Status, one)
			}
		}
	}
	var err error
	if o.CreatedAfter, err = queryTime(r, "created_after"); err != nil {
		return nil, err
	}
	if o.CreatedBefore, err = queryTime(r, "created_before"); err != nil {
		return nil, err
	}
	limit, err := queryInt(r, "limit")
	if err != nil {
		return nil, err
	}
	o.Limit = int(limit)
	return s.runs.List(r.Context(), o)
}

// paged adapts a listing to the limit and page_token query parameters.
func paged(fn func(*http.Request, client.PageOptions) (any, error)) func(*http.Request) (any, error) {
	return func(r *http.Request) (any, error) {
		p, err := queryPage(r)
		if err != nil {
			return nil, err
		}
		return fn(r, p)
	}
}

func queryPage(r *http.Request) (client.PageOptions, error) {
	limit, err := queryInt(r, "limit")
	if err != nil {
		return client.PageOptions{}, err
	}
	if limit < 0 || limit > 1000 {
		return client.PageOptions{}, badRequest{fmt.Sprintf("limit %d: want 1 to 1000 (0 or none: 100)", limit)}
	}
	return client.PageOptions{Limit: int(limit), PageToken: r.URL.Query().Get("page_token")}, nil
}

func (s *Server) showModel(r *http.Request, name string) (*client.Model, error) {
	vs, err := s.cat.Show(r.Context(), name)
	if err != nil {
		return nil, err
	}
	out := &client.Model{Name: name, Versions: make([]client.ModelVersion, len(vs))}
	for i, v := range vs {
		out.Versions[i] = versionView(v)
	}
	return out, nil
}

func versionView(v store.ModelVersion) client.ModelVersion {
	var metrics map[string]any
	json.Unmarshal([]byte(v.Metrics), &metrics) //nolint:errcheck // stored by us; empty on damage
	return client.ModelVersion{Version: v.Version, StorageLocation: v.StorageLocation, Run: v.Run, BaseModel: v.BaseModel,
		DataFingerprint: v.DataFingerprint, Metrics: metrics, License: v.License, CreatedAt: v.CreatedAt, Aliases: v.Aliases,
		Adapter: engine.IsAdapterDir(v.StorageLocation)}
}
