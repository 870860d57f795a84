package collective

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// The rendezvous store is a key-value map hosted by rank 0 over TCP, with
// the set/get/wait operations of Gloo's rendezvous Store. The protocol is
// one JSON object a line each way. The first request of a connection is
// a hello carrying the shared secret and the client's rank; the server
// closes connections that fail it, and admits each rank at most once at a
// time.

type storeRequest struct {
	Op        string   `json:"op"` // hello, set, get, wait
	Secret    string   `json:"secret,omitempty"`
	Rank      int      `json:"rank,omitempty"`
	Key       string   `json:"key,omitempty"`
	Keys      []string `json:"keys,omitempty"`
	Value     []byte   `json:"value,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
}

type storeResponse struct {
	Value []byte `json:"value,omitempty"`
	Err   string `json:"err,omitempty"`
}

// StoreServer hosts a rendezvous store.
type StoreServer struct {
	ln     net.Listener
	secret string
	size   int
	log    *slog.Logger
	admit  func(rank int, remote net.Addr) error

	mu      sync.Mutex
	data    map[string][]byte
	changed chan struct{} // closed and replaced on every set
	ranks   map[int]bool  // ranks with a live connection
	conns   map[net.Conn]bool
	closed  bool
	wg      sync.WaitGroup
}

// ServeStore starts a store on addr (host:port; port 0 picks one) for a
// group of size ranks. Close stops it.
func ServeStore(addr, secret string, size int, log *slog.Logger) (*StoreServer, error) {
	return ServeStoreAdmit(addr, secret, size, log, nil)
}

// ServeStoreAdmit is ServeStore with a further check of each client that
// presents the secret: admit (when not nil) refuses a rank connecting from
// an address other than the one the rendezvous record names for it.
func ServeStoreAdmit(addr, secret string, size int, log *slog.Logger, admit func(rank int, remote net.Addr) error) (*StoreServer, error) {
	if len(secret) < 16 {
		return nil, errors.New("rendezvous store: the shared secret must have at least 16 bytes")
	}
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rendezvous store: listen on %s: %w", addr, err)
	}
	s := &StoreServer{ln: ln, secret: secret, size: size, log: log, admit: admit, data: map[string][]byte{},
		changed: make(chan struct{}), ranks: map[int]bool{}, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the address the store listens on.
func (s *StoreServer) Addr() string { return s.ln.Addr().String() }

// Close stops the store and drops its connections.
func (s *StoreServer) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *StoreServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

func (s *StoreServer) serve(c net.Conn) {
	rank := -1
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		if rank >= 0 {
			delete(s.ranks, rank)
		}
		s.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReader(c)
	enc := json.NewEncoder(c)
	// The hello must come quickly: an idle stranger holds nothing.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hello storeRequest
	if err := readLine(r, &hello); err != nil {
		return
	}
	if hello.Op != "hello" || subtle.ConstantTimeCompare([]byte(hello.Secret), []byte(s.secret)) != 1 {
		s.log.Warn("rendezvous store: rejected a client without the run's secret", "remote", c.RemoteAddr().String())
		_ = enc.Encode(storeResponse{Err: "wrong secret"})
		return
	}
	s.mu.Lock()
	switch {
	case hello.Rank < 0 || hello.Rank >= s.size:
		s.mu.Unlock()
		_ = enc.Encode(storeResponse{Err: fmt.Sprintf("rank %d is outside [0, %d)", hello.Rank, s.size)})
		return
	case s.ranks[hello.Rank]:
		s.mu.Unlock()
		s.log.Warn("rendezvous store: rejected a second client for a rank", "rank", hello.Rank, "remote", c.RemoteAddr().String())
		_ = enc.Encode(storeResponse{Err: fmt.Sprintf("rank %d has already joined", hello.Rank)})
		return
	}
	s.ranks[hello.Rank] = true
	rank = hello.Rank
	s.mu.Unlock()
	if s.admit != nil {
		if err := s.admit(hello.Rank, c.RemoteAddr()); err != nil {
			s.log.Warn("rendezvous store: refused a client the rendezvous record does not name", "rank", hello.Rank,
				"remote", c.RemoteAddr().String(), "err", err)
			// Free the rank before answering: the right client may be next.
			s.mu.Lock()
			delete(s.ranks, rank)
			s.mu.Unlock()
			rank = -1
			_ = enc.Encode(storeResponse{Err: err.Error()})
			return
		}
	}
	if enc.Encode(storeResponse{}) != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	for {
		var req storeRequest
		if err := readLine(r, &req); err != nil {
			return
		}
		var resp storeResponse
		switch req.Op {
		case "set":
			s.set(req.Key, req.Value)
		case "get":
			if err := s.wait([]string{req.Key}, req.TimeoutMS); err != nil {
				resp.Err = err.Error()
			} else {
				s.mu.Lock()
				resp.Value = s.data[req.Key]
				s.mu.Unlock()
			}
		case "wait":
			if err := s.wait(req.Keys, req.TimeoutMS); err != nil {
				resp.Err = err.Error()
			}
		default:
			resp.Err = fmt.Sprintf("unknown op %q", req.Op)
		}
		if enc.Encode(resp) != nil {
			return
		}
	}
}

func readLine(r *bufio.Reader, v any) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, v)
}

func (s *StoreServer) set(key string, v []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[key] = v
	close(s.changed)
	s.changed = make(chan struct{})
}

// wait blocks until every key is set or timeoutMS passes.
func (s *StoreServer) wait(keys []string, timeoutMS int64) error {
	timer := time.NewTimer(time.Duration(max(timeoutMS, 1)) * time.Millisecond)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return errors.New("store closed")
		}
		var missing string
		for _, k := range keys {
			if _, ok := s.data[k]; !ok {
				missing = k
				break
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if missing == "" {
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return fmt.Errorf("timed out after %v waiting for key %q (a rank has not joined)", time.Duration(timeoutMS)*time.Millisecond, missing)
		}
	}
}

// StoreClient is one rank's connection to the rendezvous store. Its
// methods are safe for concurrent use (requests are serialized).
type StoreClient struct {
	mu      sync.Mutex
	c       net.Conn
	r       *bufio.Reader
	timeout time.Duration
}

// DialStore connects to the store at addr as rank, retrying until
// timeout passes (rank 0 may not be listening yet).
func DialStore(ctx context.Context, addr, secret string, rank int, timeout time.Duration) (*StoreClient, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		d := net.Dialer{Timeout: time.Until(deadline)}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			sc := &StoreClient{c: c, r: bufio.NewReader(c), timeout: timeout}
			_, err = sc.do(storeRequest{Op: "hello", Secret: secret, Rank: rank}, 10*time.Second)
			if err == nil {
				return sc, nil
			}
			c.Close()
			return nil, fmt.Errorf("rendezvous store %s: %w", addr, err)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("rendezvous store %s: no connection within %v: %w: %w", addr, timeout, lastErr, ErrTimeout)
}

func (sc *StoreClient) do(req storeRequest, wait time.Duration) ([]byte, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	// The server answers a wait within its timeout; allow for transit.
	_ = sc.c.SetDeadline(time.Now().Add(wait + 5*time.Second))
	b, _ := json.Marshal(req)
	if _, err := sc.c.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	var resp storeResponse
	if err := readLine(sc.r, &resp); err != nil {
		return nil, err
	}
	if resp.Err != "" {
		if req.Op == "get" || req.Op == "wait" {
			return nil, fmt.Errorf("%s: %w", resp.Err, ErrTimeout)
		}
		return nil, errors.New(resp.Err)
	}
	return resp.Value, nil
}

// Set stores v under key.
func (sc *StoreClient) Set(key string, v []byte) error {
	_, err := sc.do(storeRequest{Op: "set", Key: key, Value: v}, sc.timeout)
	return err
}

// Get returns key's value, waiting for it up to the client's timeout.
func (sc *StoreClient) Get(key string) ([]byte, error) {
	return sc.do(storeRequest{Op: "get", Key: key, TimeoutMS: sc.timeout.Milliseconds()}, sc.timeout)
}

// Wait blocks until every key is set, up to timeout.
func (sc *StoreClient) Wait(keys []string, timeout time.Duration) error {
	_, err := sc.do(storeRequest{Op: "wait", Keys: keys, TimeoutMS: timeout.Milliseconds()}, timeout)
	return err
}

// Close drops the connection (and the rank's claim on the store).
func (sc *StoreClient) Close() error { return sc.c.Close() }
