package server

import (
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Browser-borne requests: a web page the user visits can send requests to
// a loopback server, with its own Origin, or through DNS rebinding under a
// foreign Host. Without a token, only requests addressed to this machine's
// loopback names from no page or from a same-origin page are served. With
// a token a browser cannot send it cross-site without CORS, which hone
// never grants, so the Host and Origin checks are skipped.

// checkBrowser returns a reason to refuse r, or "".
func (s *Server) checkBrowser(r *http.Request) string {
	if len(s.token) > 0 {
		return ""
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !loopbackHost(hostOnly(r.Host), local) {
		return fmt.Sprintf("Host %q is not this server's loopback address: use http://127.0.0.1 or http://localhost "+
			"(a server reachable under other names needs --token)", r.Host)
	}
	origin := r.Header.Get("Origin")
	if origin != "" && !sameOrigin(origin, local) {
		return fmt.Sprintf("Origin %q is not this server: cross-site requests are refused", origin)
	}
	return ""
}

// checkContentType refuses a body that is not declared JSON: browsers send
// text/plain and form bodies cross-site without asking first.
func checkContentType(r *http.Request) string {
	if r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodPatch {
		return ""
	}
	if r.ContentLength == 0 && len(r.TransferEncoding) == 0 {
		return ""
	}
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if strings.HasPrefix(r.URL.Path, volumeFiles) {
		// File uploads are raw bytes; application/octet-stream, like JSON,
		// is not a type a cross-site form can send without a preflight.
		if err == nil && mt == "application/octet-stream" {
			return ""
		}
		return fmt.Sprintf("Content-Type %q: send the file with Content-Type: application/octet-stream", ct)
	}
	if r.URL.Path == oaiFilesPath {
		return checkMultipart(r, mt, err)
	}
	if err == nil && mt == "application/json" {
		return ""
	}
	return fmt.Sprintf("Content-Type %q: send the JSON body with Content-Type: application/json", ct)
}

// checkMultipart admits the OpenAI file upload, multipart/form-data as the
// official clients send it. A cross-site HTML form can send that type
// without a preflight, so it is taken only with an Authorization header,
// which no form can set (and a script only after a CORS preflight, which
// hone never grants): the clients always send their API key there.
func checkMultipart(r *http.Request, mt string, err error) string {
	if err != nil || mt != "multipart/form-data" {
		return fmt.Sprintf("Content-Type %q: upload the file as multipart/form-data (fields purpose and file)", r.Header.Get("Content-Type"))
	}
	if r.Header.Get("Authorization") == "" {
		return "a multipart upload needs an Authorization header (Bearer <API key>; any key when the server has no token): " +
			"browser forms cannot send one, so this keeps other web pages from uploading"
	}
	return ""
}

// hostOnly strips the port from a Host header value, and the brackets
// from an IPv6 address.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// loopbackHost reports whether host names this machine's loopback: one of
// its usual names or the address the connection arrived on (when that is
// loopback; a token is required beyond it).
func loopbackHost(host string, local net.Addr) bool {
	switch strings.ToLower(host) {
	case "localhost", "127.0.0.1", "::1":
		return true
	case "":
		return false
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return false
	}
	if tcp, ok := local.(*net.TCPAddr); ok {
		return tcp.IP.Equal(ip)
	}
	return false
}

// sameOrigin reports whether a browser's Origin is a page of this server:
// a loopback host on the port the connection arrived on.
func sameOrigin(origin string, local net.Addr) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !loopbackHost(u.Hostname(), local) {
		return false
	}
	tcp, ok := local.(*net.TCPAddr)
	if !ok {
		return true // no connection to compare with (a handler called directly)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return port == strconv.Itoa(tcp.Port)
}
