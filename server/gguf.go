package server

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"hone/catalog"
	"hone/client"
	"hone/export"
)

// ggufRoutes: POST /api/catalog/models/{name}/gguf registers a GGUF file
// hone export wrote, at a path under the server's data roots, as the
// model's next version: a directory (export.UnpackServable) that hone
// serve decodes from the file's quantized matrices.
func (s *Server) ggufRoutes() {
	s.mux.HandleFunc("POST /api/catalog/models/{name}/gguf", s.handler(201, func(r *http.Request) (any, error) {
		var req client.RegisterGGUFRequest
		if err := s.decode(r, &req); err != nil {
			return nil, err
		}
		name := r.PathValue("name")
		n, err := catalog.ParseName(name)
		if err != nil {
			return nil, err
		}
		if n.Model == "" {
			return nil, badRequest{fmt.Sprintf("model %q: want catalog.schema.model", name)}
		}
		if !strings.HasSuffix(strings.ToLower(req.Path), ".gguf") {
			return nil, badRequest{fmt.Sprintf("path %q: want a .gguf file hone export wrote", req.Path)}
		}
		if s.runs == nil {
			return nil, errors.New("register a GGUF file: this server has no data roots (runs service)")
		}
		p, err := s.runs.Confine(req.Path)
		if err != nil {
			return nil, err
		}
		tmp, err := os.MkdirTemp("", "hone-gguf-register-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir := filepath.Join(tmp, "model")
		if err := export.UnpackServable(r.Context(), p, dir); err != nil {
			if errors.Is(err, export.ErrInvalid) || errors.Is(err, os.ErrNotExist) {
				return nil, badRequest{fmt.Sprintf("path %q: %v", req.Path, err)}
			}
			return nil, fmt.Errorf("register %s from %s: %w", name, req.Path, err)
		}
		if _, err := s.cat.Register(r.Context(), catalog.Registration{Target: n, SourceDir: dir, Move: true}); err != nil {
			return nil, err
		}
		return s.showModel(r, name)
	}))
}
