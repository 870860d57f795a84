package server

import (
	"net/http"

	"hone/client"
	"hone/ui"
)

// uiRoutes adds what the web UI needs beyond the CLI's routes (a dry run of
// run creation, the catalog tree) and mounts the UI itself at "/".
func (s *Server) uiRoutes() {
	s.mux.HandleFunc("POST /api/runs/validate", s.handler(200, func(r *http.Request) (any, error) {
		var req client.CreateRunRequest
		if err := s.decode(r, &req); err != nil {
			return nil, err
		}
		return s.runs.Validate(r.Context(), req)
	}))
	s.mux.HandleFunc("GET /api/catalog/tree", s.handler(200, func(r *http.Request) (any, error) {
		return s.cat.Tree(r.Context())
	}))
	h := ui.Handler(ui.Config{TokenRequired: len(s.token) > 0})
	s.mux.Handle("GET /{$}", h)
	s.mux.Handle("GET /ui/", h)
}
