// Package serving answers prompts and chats with model directories: it
// keeps a small least-recently-used cache of loaded models (keyed by
// directory, which for registered versions never changes), formats chats
// with each model's own chat template exactly as chat training data is
// formatted, samples with package generate and reports each piece of text
// as soon as it is final, so that callers can stream it.
//
// A *Service is safe for concurrent use. Loading is serialized (one model
// loads at a time). Engine models and devices are not safe for concurrent
// use, and the CPU device's kernels already use every core, so all models
// share one device and one request generates at a time; the others wait
// their turn. Waiting, loading aside, and generating honour ctx: a
// cancelled request stops after the token being computed. A model evicted
// from the cache while a request still uses it stays in memory until that
// request ends.
package serving

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"hone/chattemplate"
	"hone/engine"
	"hone/tokenizer"
)

// ErrInvalid marks a request the model cannot answer as asked (no chat
// template for messages, a prompt longer than the context, bad sampling
// settings); the message says why.
var ErrInvalid = errors.New("invalid request")

type invalidError struct{ msg string }

func (e invalidError) Error() string        { return e.msg }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, a ...any) error { return invalidError{fmt.Sprintf(format, a...)} }

// Config configures a Service.
type Config struct {
	// MaxLoaded is how many models stay loaded at once; default 1.
	MaxLoaded int
	// DefaultMaxTokens bounds a completion whose request sets no
	// max_tokens; default 512 (the context window bounds it too).
	DefaultMaxTokens int
	// Threads is the CPU threads each model's kernels use; 0 = GOMAXPROCS.
	Threads int
	Logger  *slog.Logger
	// Load loads a model directory; default engine.Load on the service's
	// one CPU device.
	Load func(dir string) (*engine.Model, error)
}

// Service loads models on demand and completes requests with them.
type Service struct {
	cfg     Config
	log     *slog.Logger
	loading chan struct{} // one slot: loads are serialized
	running chan struct{} // one slot: one generation at a time

	mu    sync.Mutex
	lru   *list.List               // of *loaded, most recent first
	byDir map[string]*list.Element // guarded by mu
}

// loaded is one model in memory with what formatting and decoding need.
type loaded struct {
	dir  string
	m    *engine.Model
	tok  *tokenizer.Tokenizer
	tmpl *chattemplate.Template // nil: the model has no chat template
	stop []int                  // end-of-generation ids
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.MaxLoaded < 0 || cfg.DefaultMaxTokens < 0 || cfg.Threads < 0 {
		return nil, errors.New("serving: MaxLoaded, DefaultMaxTokens and Threads must not be negative")
	}
	if cfg.MaxLoaded == 0 {
		cfg.MaxLoaded = 1
	}
	if cfg.DefaultMaxTokens == 0 {
		cfg.DefaultMaxTokens = 512
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Load == nil {
		dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: cfg.Threads})
		if err != nil {
			return nil, err
		}
		cfg.Load = func(dir string) (*engine.Model, error) { return engine.Load(dir, dev, engine.Options{}) }
	}
	return &Service{cfg: cfg, log: cfg.Logger, loading: make(chan struct{}, 1), running: make(chan struct{}, 1),
		lru: list.New(), byDir: map[string]*list.Element{}}, nil
}

// Loaded returns the directories of the models in memory, most recently
// used first.
func (s *Service) Loaded() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for e := s.lru.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(*loaded).dir)
	}
	return out
}

// lookup returns the cached model of dir, marking it most recently used.
func (s *Service) lookup(dir string) *loaded {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byDir[dir]; ok {
		s.lru.MoveToFront(e)
		return e.Value.(*loaded)
	}
	return nil
}

// model returns dir's model, loading it (and evicting the least recently
// used ones beyond MaxLoaded) when it is not in memory.
func (s *Service) model(ctx context.Context, dir string) (*loaded, error) {
	dir = filepath.Clean(dir)
	if l := s.lookup(dir); l != nil {
		return l, nil
	}
	select {
	case s.loading <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.loading }()
	if l := s.lookup(dir); l != nil { // loaded while we waited
		return l, nil
	}
	start := time.Now()
	l, err := s.load(dir)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.byDir[dir] = s.lru.PushFront(l)
	var evicted []string
	for s.lru.Len() > s.cfg.MaxLoaded {
		old := s.lru.Remove(s.lru.Back()).(*loaded)
		delete(s.byDir, old.dir)
		evicted = append(evicted, old.dir)
	}
	s.mu.Unlock()
	s.log.Info("model loaded", "dir", dir, "duration", time.Since(start), "evicted", evicted)
	return l, nil
}

func (s *Service) load(dir string) (*loaded, error) {
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("serving: load %s: %w", dir, err)
	}
	tmpl, err := chattemplate.FromModelDir(dir)
	if errors.Is(err, chattemplate.ErrNoTemplate) {
		tmpl, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("serving: load %s: %w", dir, err)
	}
	m, err := s.cfg.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("serving: load %s: %w", dir, err)
	}
	// Generation ends at any end id of the tokenizer files or config.json,
	// as hone generate does.
	stop := slices.Clone(tok.Special().EOSIDs)
	for _, id := range m.Config.EOSTokenID {
		if !slices.Contains(stop, id) {
			stop = append(stop, id)
		}
	}
	return &loaded{dir: dir, m: m, tok: tok, tmpl: tmpl, stop: stop}, nil
}
