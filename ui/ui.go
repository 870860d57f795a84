// Package ui is hone's web UI: plain HTML, CSS and JavaScript modules
// embedded in the binary (no build step, no CDN, so it works offline),
// served by hone serve at "/" with its assets under "/ui/". The pages talk
// to the JSON API and /v1 with the same bearer token as any client; the
// handler itself needs no token, since the assets hold no data.
package ui

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Config configures the handler.
type Config struct {
	// TokenRequired tells the pages to ask for the bearer token before the
	// first API call rather than after a refusal.
	TokenRequired bool
}

// Handler serves the UI: "/" is the single page, "/ui/config.json" the
// settings the pages start with, "/ui/<file>" the assets. Anything else is
// 404.
func Handler(cfg Config) http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	settings, _ := json.Marshal(map[string]bool{"token_required": cfg.TokenRequired})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Same-origin only: no inline script, no third-party anything, and
		// never framed (clickjacking of the cancel and alias buttons).
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "+
			"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		switch {
		case r.URL.Path == "/":
			http.ServeFileFS(w, r, sub, "index.html")
		case r.URL.Path == "/ui/config.json":
			h.Set("Content-Type", "application/json")
			w.Write(settings) //nolint:errcheck // the client went away
		case strings.HasPrefix(r.URL.Path, "/ui/") && !strings.HasSuffix(r.URL.Path, "/"):
			r2 := r.Clone(r.Context())
			r2.URL.Path = strings.TrimPrefix(r.URL.Path, "/ui")
			files.ServeHTTP(w, r2)
		default:
			http.NotFound(w, r)
		}
	})
}
