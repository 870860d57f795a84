package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"hone/catalog"
	"hone/chattemplate"
	"hone/client"
	"hone/serving"
	"hone/store"
)

// generateRoutes adds the native completion API.
func (s *Server) generateRoutes() {
	s.mux.HandleFunc("POST /api/generate", s.handler(200, func(r *http.Request) (any, error) {
		var req client.GenerateRequest
		if err := s.decode(r, &req); err != nil {
			return nil, err
		}
		return s.generate(r.Context(), req, 0, nil)
	}))
}

// generate is the one implementation of completions: it resolves the
// model, runs it and reports the text, handing each final piece of text to
// onText (when non-nil) with the id of the version producing it, as soon as
// it is produced. The OpenAI routes call it too. defaultMax bounds a
// request without max_tokens (0: the serving default); the context window
// bounds it too.
func (s *Server) generate(ctx context.Context, req client.GenerateRequest, defaultMax int, onText func(model, piece string) error) (*client.GenerateResponse, error) {
	v, err := s.resolveModel(ctx, req.Model)
	if err != nil {
		return nil, err
	}
	id, dir := versionID(*v), v.StorageLocation
	sr := serving.Request{Prompt: req.Prompt, MaxTokens: req.MaxTokens, Temperature: req.Temperature, TopP: req.TopP,
		TopK: req.TopK, Seed: req.Seed, Stop: req.Stop, DefaultMaxTokens: defaultMax}
	for _, m := range req.Messages {
		sr.Messages = append(sr.Messages, chattemplate.Message{Role: m.Role, Content: m.Content})
	}
	var sink func(string) error
	if onText != nil {
		sink = func(piece string) error { return onText(id, piece) }
	}
	res, err := s.serve.Generate(ctx, dir, sr, sink)
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", id, err)
	}
	return &client.GenerateResponse{Model: id, Text: res.Text, FinishReason: res.FinishReason,
		PromptTokenIDs: res.PromptTokenIDs, TokenIDs: res.TokenIDs, Usage: client.Usage{
			PromptTokens: res.PromptTokens, CompletionTokens: res.CompletionTokens, TotalTokens: res.PromptTokens + res.CompletionTokens}}, nil
}

// resolveModel finds the version a model name refers to: "c.s.m/N",
// "c.s.m@alias", "c.s.m" (the newest version) or an endpoint's name (no
// dots), whose reference is resolved anew for each request: a request
// keeps the version it started with while an alias moves.
func (s *Server) resolveModel(ctx context.Context, name string) (*store.ModelVersion, error) {
	if name == "" {
		return nil, badRequest{"model is required: an endpoint's name, catalog.schema.model, catalog.schema.model/N or catalog.schema.model@alias"}
	}
	ref, ok, err := catalog.ParseRef(name)
	if err != nil {
		return nil, err
	}
	var v *store.ModelVersion
	if ok {
		v, err = s.cat.Resolve(ctx, ref)
	} else if catalog.ValidEndpointName(name) {
		v, err = s.cat.ServeEndpoint(ctx, name)
	} else if n, perr := catalog.ParseName(name); perr == nil && n.Model != "" {
		var vs []store.ModelVersion
		if vs, err = s.cat.Show(ctx, name); err == nil {
			if len(vs) == 0 {
				err = fmt.Errorf("model %s has no versions: %w", name, store.ErrNotFound)
			} else {
				v = &vs[len(vs)-1]
			}
		}
	} else {
		err = fmt.Errorf("model %q: %w: name a registered version as catalog.schema.model[/N|@alias]", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

// versionID is a version's model id, "catalog.schema.model/N".
func versionID(v store.ModelVersion) string {
	return v.Catalog + "." + v.Schema + "." + v.Model + "/" + strconv.Itoa(v.Version)
}
