package server_test

import (
	"bytes"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/catalog"
	"hone/server"
	"hone/store/storetest"
)

// multipartBody is an upload as the OpenAI clients send it.
func multipartBody(t *testing.T, purpose, filename, content string) (string, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	fw, err := mw.CreateFormFile("file", filename)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write([]byte(content))
	mw.WriteField("purpose", purpose)
	mw.Close()
	return b.String(), mw.FormDataContentType()
}

// TestFileUploadGuard: multipart/form-data, which a cross-site HTML form
// can send without a preflight, reaches POST /v1/files only with an
// Authorization header (which no form can set), never from a foreign
// Origin; an upload over the size limit is refused with 413 and leaves
// nothing behind.
func TestFileUploadGuard(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	line := `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}` + "\n"
	body, ct := multipartBody(t, "fine-tune", "train.jsonl", line)
	for _, tc := range []struct {
		name    string
		header  map[string]string
		want    int
		wantMsg string
	}{
		{"cross-site form", map[string]string{"Content-Type": ct, "Origin": "http://evil.example"}, 403, "Origin"},
		{"cross-site form with a key", map[string]string{"Content-Type": ct, "Origin": "http://evil.example", "Authorization": "Bearer x"}, 403, "Origin"},
		{"form without a key", map[string]string{"Content-Type": ct}, 415, "Authorization"},
		{"text/plain", map[string]string{"Content-Type": "text/plain", "Authorization": "Bearer x"}, 415, "multipart/form-data"},
		{"client", map[string]string{"Content-Type": ct, "Authorization": "Bearer any-key"}, 200, ""},
	} {
		got := send(t, "POST", h.url+"/v1/files", body, tc.header)
		var oe struct {
			Error struct{ Message string } `json:"error"`
		}
		json.Unmarshal([]byte(got.body), &oe)
		if got.status != tc.want || !strings.Contains(oe.Error.Message, tc.wantMsg) {
			t.Errorf("%s: POST /v1/files = %d %s, want %d with %q", tc.name, got.status, got.body, tc.want, tc.wantMsg)
		}
	}
	vol := filepath.Join(h.home, "catalog", ".volumes", "main", "openai", "files")
	if es, err := os.ReadDir(vol); err != nil || len(es) != 2 {
		t.Fatalf("after one accepted upload the volume holds %v (%v), want its data and description", es, err)
	}

	// A server with a small upload limit refuses a bigger file whole.
	cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(h.home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	small, err := server.New(server.Config{Runs: h.svc, Catalog: cat, MaxUploadBytes: 1024})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(small)
	defer ts.Close()
	big, ct := multipartBody(t, "fine-tune", "big.jsonl", strings.Repeat(line, 40))
	got := send(t, "POST", ts.URL+"/v1/files", big, map[string]string{"Content-Type": ct, "Authorization": "Bearer x"})
	if got.status != http.StatusRequestEntityTooLarge || !strings.Contains(got.body, "1024 bytes") || !strings.Contains(got.body, `"param": "file"`) {
		t.Errorf("upload over the limit = %d %s, want 413 naming the limit and param file", got.status, got.body)
	}
	if es, _ := os.ReadDir(vol); len(es) != 2 {
		t.Errorf("a refused upload left files behind: %v", es)
	}
}

// TestFileUploadNeedsToken: with a token, an upload with a wrong key is
// refused before its body is read.
func TestFileUploadNeedsToken(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{token: testToken})
	body, ct := multipartBody(t, "fine-tune", "train.jsonl", "{}\n")
	if got := send(t, "POST", h.url+"/v1/files", body, map[string]string{"Content-Type": ct, "Authorization": "Bearer wrong-token-0123456"}); got.status != 401 {
		t.Errorf("wrong key = %d %s, want 401", got.status, got.body)
	}
	for _, p := range []string{"/v1/files", "/v1/fine_tuning/jobs"} {
		if got := send(t, "GET", h.url+p, "", nil); got.status != 401 || !strings.Contains(got.body, "invalid_api_key") {
			t.Errorf("GET %s without a key = %d %s, want 401", p, got.status, got.body)
		}
	}
	if got := send(t, "GET", h.url+"/v1/files", "", map[string]string{"Authorization": "Bearer " + testToken}); got.status != 200 ||
		!strings.Contains(got.body, `"data": []`) {
		t.Errorf("GET /v1/files on a fresh server = %d %s, want an empty list", got.status, got.body)
	}
}
