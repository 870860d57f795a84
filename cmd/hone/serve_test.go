package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/client"
	"hone/internal/testcert"
)

// TestServeHTTPSWithTokenFile runs hone serve as a user would: HTTPS from
// --tls-cert/--tls-key and the token from --token-file.
func TestServeHTTPSWithTokenFile(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := testcert.Write(t, dir)
	token := "0123456789abcdef-token"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := serveCmd()
	cmd.SetArgs([]string{"--home", filepath.Join(dir, "home"), "--data-root", dir, "--addr", addr,
		"--tls-cert", certFile, "--tls-key", keyFile, "--token-file", tokenFile})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hone serve: %v", err)
		}
	}()

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	c, err := client.New(client.Config{Server: "https://" + addr, Token: token, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err = c.ListRuns(ctx, client.ListRunsOptions{})
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("hone serve ended early: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("ListRuns over HTTPS with the file's token: %v", err)
	}
	wrong, _ := client.New(client.Config{Server: "https://" + addr, Token: "0123456789abcdef-wrong", HTTPClient: hc})
	if _, err := wrong.ListRuns(ctx, client.ListRunsOptions{}); client.StatusOf(err) != 401 {
		t.Errorf("a wrong token: %v, want 401", err)
	}
}

func TestServeRefusesShortTokenBeyondLoopback(t *testing.T) {
	cmd := serveCmd()
	cmd.SetArgs([]string{"--home", t.TempDir(), "--addr", "0.0.0.0:0", "--token", "short"})
	err := cmd.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Fatalf("hone serve --addr 0.0.0.0:0 --token short = %v, want a refusal naming the minimum", err)
	}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
