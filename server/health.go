package server

import (
	"context"
	"errors"
	"net/http"
	"syscall"
	"time"

	"hone/client"
)

// healthTimeout bounds the store check of /api/health.
const healthTimeout = 2 * time.Second

// healthRoutes: /api/livez says the process serves (always 200);
// /api/health also says whether the store answers: 503 with the reason
// when it does not. Neither needs the token, so the reason names the kind
// of failure only; the full error is logged.
func (s *Server) healthRoutes() {
	s.mux.HandleFunc("GET /api/livez", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, &client.Health{Status: "ok"})
	})
	s.mux.HandleFunc("GET /api/health", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		if err := s.runs.StoreHealth(ctx); err != nil {
			s.log.Warn("health: store does not answer", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, &client.Health{Status: "unavailable", Store: "unavailable",
				Reason: "the database does not answer: " + storeFailure(err)})
			return
		}
		writeJSON(w, http.StatusOK, &client.Health{Status: "ok", Store: "ok"})
	})
}

// storeFailure names the kind of a store error without addresses or
// credentials.
func storeFailure(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer within " + healthTimeout.String()
	case errors.Is(err, syscall.ENOSPC):
		return "no space left on device"
	}
	return "error (the server log has the cause)"
}
