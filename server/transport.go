package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// MinTokenLen is the shortest bearer token accepted for a server reachable
// beyond loopback: a short token can be guessed over the network.
const MinTokenLen = 16

// Timeouts of the http.Server: a client gets ReadHeaderTimeout to send its
// headers and ReadTimeout for the whole request (bodies are at most
// MaxBodyBytes), and an idle keep-alive connection is closed after
// IdleTimeout. There is no write timeout: completions and long listings
// stream for as long as they take.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 60 * time.Second
	IdleTimeout       = 120 * time.Second
)

// CheckListen refuses an address beyond loopback without a bearer token of
// at least MinTokenLen characters.
func CheckListen(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if IsLoopback(host) {
		return nil
	}
	if token == "" {
		return fmt.Errorf("listening on %q reaches beyond this machine: set a bearer token of at least %d characters "+
			"with --token-file, --token or HONE_TOKEN (e.g. openssl rand -hex 32)", addr, MinTokenLen)
	}
	if len(token) < MinTokenLen {
		return fmt.Errorf("the bearer token has %d characters; listening on %q beyond this machine needs at least %d "+
			"(e.g. openssl rand -hex 32)", len(token), addr, MinTokenLen)
	}
	return nil
}

// IsLoopback reports whether a listen host (name or address) stays on this
// machine.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// HTTPServer returns the http.Server for h with the timeouts above and,
// when certFile and keyFile are set, TLS with that certificate (loaded
// now, so that a bad file is reported before anything listens).
func HTTPServer(h http.Handler, certFile, keyFile string) (*http.Server, error) {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: ReadHeaderTimeout, ReadTimeout: ReadTimeout, IdleTimeout: IdleTimeout}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("HTTPS needs both --tls-cert and --tls-key")
	}
	if certFile == "" {
		return hs, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w (want PEM files)", certFile, keyFile, err)
	}
	hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return hs, nil
}

// Serve serves hs on ln, over TLS when hs has a TLS configuration. It
// returns http.ErrServerClosed after Shutdown.
func Serve(hs *http.Server, ln net.Listener) error {
	if hs.TLSConfig != nil {
		return hs.ServeTLS(ln, "", "")
	}
	return hs.Serve(ln)
}
