package ui_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"hone/ui"
)

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHandler(t *testing.T) {
	h := ui.Handler(ui.Config{})
	resp, body := get(t, h, "/")
	if resp.StatusCode != 200 || !strings.Contains(body, `<script type="module" src="/ui/app.js">`) {
		t.Fatalf("GET / = %d %q, want the page", resp.StatusCode, body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if _, body := get(t, h, "/ui/config.json"); body != `{"token_required":false}` {
		t.Errorf("config.json = %s, want no token required", body)
	}
	for _, p := range []string{"/ui/", "/ui/nope.js", "/nope", "/ui/../ui.go"} {
		if resp, _ := get(t, h, p); resp.StatusCode != 404 {
			t.Errorf("GET %s = %d, want 404", p, resp.StatusCode)
		}
	}
}

// TestAssetsComplete: every module, stylesheet and icon the pages refer to
// is embedded and served with its type, so a missing file cannot ship.
func TestAssetsComplete(t *testing.T) {
	h := ui.Handler(ui.Config{})
	refRE := regexp.MustCompile(`(?:from '\./([\w.-]+)'|(?:src|href)="/ui/([\w.-]+)")`)
	types := map[string]string{".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
	seen := map[string]bool{}
	err := fs.WalkDir(os.DirFS("assets"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join("assets", p))
		if err != nil {
			return err
		}
		for _, m := range refRE.FindAllStringSubmatch(string(b), -1) {
			seen[m[1]+m[2]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) < 8 {
		t.Fatalf("found only %d references: %v", len(seen), seen)
	}
	for name := range seen {
		resp, _ := get(t, h, "/ui/"+name)
		ct := resp.Header.Get("Content-Type")
		if resp.StatusCode != 200 || !strings.HasPrefix(ct, types[filepath.Ext(name)]) {
			t.Errorf("GET /ui/%s = %d %s, want 200 %s", name, resp.StatusCode, ct, types[filepath.Ext(name)])
		}
	}
}
