package server

import (
	"net/http"

	"hone/client"
)

// sweepRoutes are the sweeps API: create a grid of runs, list, inspect
// (with each run's final losses and the best), cancel all its runs.
func (s *Server) sweepRoutes() {
	m := s.mux
	m.HandleFunc("POST /api/sweeps", s.handler(201, func(r *http.Request) (any, error) {
		var req client.CreateSweepRequest
		if err := s.decode(r, &req); err != nil {
			return nil, err
		}
		return s.runs.CreateSweep(r.Context(), req)
	}))
	m.HandleFunc("GET /api/sweeps", s.handler(200, func(r *http.Request) (any, error) {
		return s.runs.ListSweeps(r.Context(), r.URL.Query().Get("user"))
	}))
	m.HandleFunc("GET /api/sweeps/{name}", s.handler(200, func(r *http.Request) (any, error) {
		return s.runs.GetSweep(r.Context(), r.PathValue("name"))
	}))
	m.HandleFunc("POST /api/sweeps/{name}/cancel", s.handler(200, func(r *http.Request) (any, error) {
		return s.runs.CancelSweep(r.Context(), r.PathValue("name"))
	}))
}
