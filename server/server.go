// Package server is hone's HTTP API: JSON over HTTP for runs, tracking,
// the catalog and the supported-models table, described by the OpenAPI
// document at /openapi.json. Its wire types are package client's, so the
// public client and the server cannot drift apart.
//
// Registered model versions answer prompts at POST /api/generate, the one
// native completion API; the OpenAI-compatible routes under /v1 (models,
// chat completions, completions, streaming as server-sent events) translate
// to and from it.
//
// Every /api and /v1 route requires "Authorization: Bearer <token>" when a
// token is configured (compared in constant time, never logged); CheckListen
// refuses to serve beyond loopback without one of at least MinTokenLen
// characters. Without a token, requests under a foreign Host (DNS
// rebinding) or from a foreign Origin (another web page) are refused; every
// request body must be declared application/json, except volume uploads
// (application/octet-stream) and OpenAI file uploads (multipart/form-data,
// taken only with an Authorization header, which no cross-site form can
// send). The OpenAI fine-tuning API (/v1/files, /v1/fine_tuning/jobs) and
// the hosted product's /serving-endpoints routes translate to the runs and
// completion APIs and are guarded as /v1 is. Errors map to HTTP
// statuses in one place (statusOf); every /api error body is client.Error,
// every /v1 error body is OpenAI's {"error": {...}}; a 5xx body names the
// request id (header X-Request-Id) under which the cause is logged.
package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"hone/catalog"
	"hone/client"
	"hone/modelref"
	"hone/runs"
	"hone/serving"
	"hone/store"
)

// Config configures a Server.
type Config struct {
	Runs    *runs.Service
	Catalog *catalog.Catalog
	Token   string // bearer token; "" serves only loopback clients that no foreign web page sent
	Logger  *slog.Logger
	// MaxBodyBytes bounds request bodies; default 1 MiB.
	MaxBodyBytes int64
	// Serving loads and runs models for the completion routes; default
	// serving.New with its defaults (one model in memory).
	Serving *serving.Service
	Clock   func() time.Time
	// OpenAISchema is the catalog schema of the OpenAI fine-tuning API:
	// uploaded files live in its volume "files", fine-tuned models are
	// registered in it; default "main.openai" (created when first used).
	OpenAISchema string
	// MaxUploadBytes bounds one file uploaded to /v1/files; default 512 MiB.
	MaxUploadBytes int64
}

// Server serves the API.
type Server struct {
	runs  *runs.Service
	cat   *catalog.Catalog
	token []byte
	log   *slog.Logger
	max   int64
	mux   *http.ServeMux
	serve *serving.Service
	clock func() time.Time
	oai   oaiFineTuning
}

// New validates cfg and builds the routes.
func New(cfg Config) (*Server, error) {
	if cfg.Runs == nil || cfg.Catalog == nil {
		return nil, errors.New("server: Runs and Catalog are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Serving == nil {
		var err error
		if cfg.Serving, err = serving.New(serving.Config{Logger: cfg.Logger}); err != nil {
			return nil, err
		}
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	oai, err := newOAIFineTuning(cfg.OpenAISchema, cfg.MaxUploadBytes)
	if err != nil {
		return nil, err
	}
	s := &Server{runs: cfg.Runs, cat: cfg.Catalog, token: []byte(cfg.Token), log: cfg.Logger, max: cfg.MaxBodyBytes, mux: http.NewServeMux(),
		serve: cfg.Serving, clock: cfg.Clock, oai: oai}
	s.routes()
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := newRequestID()
	r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
	sw := &statusWriter{ResponseWriter: w, status: 200}
	sw.Header().Set("X-Request-Id", id)
	api := strings.HasPrefix(r.URL.Path, "/api/") || strings.HasPrefix(r.URL.Path, "/v1/") || servingEndpointPath(r.URL.Path)
	foreign, badType := s.checkBrowser(r), ""
	if api {
		badType = checkContentType(r)
	}
	switch {
	case foreign != "":
		s.refuse(sw, r, http.StatusForbidden, "forbidden", foreign)
	case api && r.URL.Path != "/api/health" && r.URL.Path != "/api/livez" && !s.authorized(r):
		sw.Header().Set("WWW-Authenticate", `Bearer realm="hone"`)
		if strings.HasPrefix(r.URL.Path, "/v1/") || servingEndpointPath(r.URL.Path) {
			s.refuse(sw, r, http.StatusUnauthorized, "invalid_api_key", "missing or wrong API key (the server's bearer token)")
		} else {
			s.refuse(sw, r, http.StatusUnauthorized, "unauthorized", "missing or wrong bearer token")
		}
	case badType != "":
		s.refuse(sw, r, http.StatusUnsupportedMediaType, "unsupported_media_type", badType)
	default:
		s.mux.ServeHTTP(sw, r)
	}
	s.log.Debug("http", "method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", time.Since(start), "request_id", id)
}

// refuse answers a request refused before its route: OpenAI's error body
// under /v1, client.Error elsewhere.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	if strings.HasPrefix(r.URL.Path, "/v1/") || servingEndpointPath(r.URL.Path) {
		writeOpenAIError(w, status, code, msg)
		return
	}
	writeJSON(w, status, &client.Error{Code: code, Message: msg})
}

type requestIDKey struct{}

func newRequestID() string {
	b := make([]byte, 8)
	rand.Read(b) //nolint:errcheck // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b)
}

// publicMessage is what a client is told of err, answered with status: a
// 5xx hides the cause (paths, SQL, internals) behind the request id, under
// which the cause is logged.
func (s *Server) publicMessage(r *http.Request, status int, err error) string {
	if status < 500 {
		return err.Error()
	}
	id, _ := r.Context().Value(requestIDKey{}).(string)
	s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "request_id", id, "err", err)
	what := "internal error"
	switch {
	case status == http.StatusInsufficientStorage:
		what = noSpaceMessage(err)
	case errors.Is(err, context.DeadlineExceeded):
		what = "the request ran out of time (the server's --request-timeout)"
	case errors.Is(err, context.Canceled):
		what = "the request was cancelled"
	case status != http.StatusInternalServerError:
		what = strings.ToLower(http.StatusText(status))
	}
	return fmt.Sprintf("%s (request id %s)", what, id)
}

func (s *Server) authorized(r *http.Request) bool {
	if len(s.token) == 0 {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), s.token) == 1
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// handler adapts a function returning (body, error) to http.HandlerFunc.
func (s *Server) handler(status int, fn func(r *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := fn(r)
		if err != nil {
			code, name := statusOf(err)
			writeJSON(w, code, &client.Error{Code: name, Message: s.publicMessage(r, code, err)})
			return
		}
		if body == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, status, body)
	}
}

// statusOf is the one mapping from errors to HTTP statuses.
func statusOf(err error) (int, string) {
	switch {
	case errors.Is(err, runs.ErrInvalid), errors.Is(err, catalog.ErrInvalid), errors.Is(err, modelref.ErrInvalid),
		errors.Is(err, errBadRequest), errors.Is(err, store.ErrBadPageToken), errors.Is(err, serving.ErrInvalid):
		return http.StatusBadRequest, "invalid_argument"
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, store.ErrExists):
		return http.StatusConflict, "already_exists"
	case errors.Is(err, runs.ErrState):
		return http.StatusConflict, "failed_precondition"
	case errors.Is(err, serving.ErrBusy):
		return http.StatusTooManyRequests, "rate_limit_exceeded"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return http.StatusInsufficientStorage, "insufficient_storage"
	}
	return http.StatusInternalServerError, "internal"
}

var errBadRequest = errors.New("bad request")

type badRequest struct{ msg string }

func (e badRequest) Error() string        { return e.msg }
func (e badRequest) Is(target error) bool { return target == errBadRequest }

func (s *Server) decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, s.max))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest{fmt.Sprintf("request body: %v", err)}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) //nolint:errcheck // the client went away
}

func queryTime(r *http.Request, key string) (time.Time, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, badRequest{fmt.Sprintf("%s %q: want an RFC 3339 time, e.g. 2026-03-01T12:00:00Z", key, v)}
	}
	return t, nil
}

func queryInt(r *http.Request, key string) (int64, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, badRequest{fmt.Sprintf("%s %q: want an integer", key, v)}
	}
	return n, nil
}
