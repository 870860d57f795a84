package server_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/client"
	"hone/internal/testcert"
	"hone/server"
	"hone/store/storetest"
)

// TestTLS serves the API over HTTPS with a self-signed certificate: a
// client trusting it works, one that does not is refused by its TLS
// check, and plain HTTP gets no API answer.
func TestTLS(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{})
	certFile, keyFile, pool := testcert.Write(t, t.TempDir())
	hs, err := server.HTTPServer(h.srv, certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if hs.ReadHeaderTimeout <= 0 || hs.ReadTimeout <= 0 || hs.IdleTimeout <= 0 || hs.WriteTimeout != 0 {
		t.Errorf("timeouts: read header %v, read %v, idle %v, write %v; want the first three set and no write timeout (responses stream)",
			hs.ReadHeaderTimeout, hs.ReadTimeout, hs.IdleTimeout, hs.WriteTimeout)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- server.Serve(hs, ln) }()
	t.Cleanup(func() {
		hs.Close()
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
	})
	ctx := context.Background()
	base := "https://" + ln.Addr().String()
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	c, err := client.New(client.Config{Server: base, HTTPClient: trusting})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListRuns(ctx, client.ListRunsOptions{}); err != nil {
		t.Fatalf("ListRuns over HTTPS: %v", err)
	}
	if _, err := c.CancelRuns(ctx, client.CancelRequest{Names: []string{"nope"}}); client.StatusOf(err) != 404 {
		t.Fatalf("CancelRuns over HTTPS = %v, want 404", err)
	}
	untrusting, _ := client.New(client.Config{Server: base})
	if _, err := untrusting.ListRuns(ctx, client.ListRunsOptions{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client not trusting the certificate: %v, want a certificate error", err)
	}
	plain, _ := client.New(client.Config{Server: "http://" + ln.Addr().String()})
	if _, err := plain.ListRuns(ctx, client.ListRunsOptions{}); client.StatusOf(err) != 400 {
		t.Errorf("plain HTTP to the HTTPS port: %v, want Go's 400", err)
	}
}

func TestHTTPServerRefusesBadTLSFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := testcert.Write(t, dir)
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not a certificate"), 0o600)
	for _, tc := range []struct{ cert, key, want string }{
		{certFile, "", "both --tls-cert and --tls-key"},
		{"", keyFile, "both --tls-cert and --tls-key"},
		{junk, keyFile, junk},
		{certFile, filepath.Join(dir, "absent.pem"), "absent.pem"},
	} {
		if _, err := server.HTTPServer(http.NotFoundHandler(), tc.cert, tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("HTTPServer(%q, %q) = %v, want an error naming %q", tc.cert, tc.key, err, tc.want)
		}
	}
}
