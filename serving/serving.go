// Package serving answers prompts and chats with model directories: it
// keeps a small least-recently-used cache of loaded models (keyed by
// directory, which for registered versions never changes), formats chats
// with each model's own chat template exactly as chat training data is
// formatted, samples with package generate and reports each piece of text
// as soon as it is final, so that callers can stream it.
//
// A *Service is safe for concurrent use. Loading is serialized (one model
// loads at a time) and never exceeds Config.MaxLoaded models in memory:
// room is made before a load, and a model evicted while a request still
// uses it counts until that request ends. Engine models and devices are
// not safe for concurrent use, and the CPU device's kernels already use
// every core, so all models share one device, driven by one loop that
// batches concurrent generations (continuous batching, see batcher): each
// decode step runs every running sequence of a model in one pass, and
// requests join and leave between steps (a long prompt in chunks) instead
// of queueing behind one another.
// Waiting, loading aside, and generating honour ctx: a cancelled request
// stops after the model call being computed. Each request also has a
// deadline (Config.RequestTimeout) after which its generation ends with
// the text so far.
package serving

import (
	"cmp"
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
// settings); the message says why and InvalidParam names the field.
var ErrInvalid = errors.New("invalid request")

type invalidError struct{ param, msg string }

func (e invalidError) Error() string        { return e.msg }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

// invalidf returns an ErrInvalid naming the request field param (OpenAI's
// names: "max_tokens", "stop", "messages"...).
func invalidf(param, format string, a ...any) error {
	return invalidError{param, fmt.Sprintf(format, a...)}
}

// InvalidParam returns the request field an ErrInvalid error names, or "".
func InvalidParam(err error) string {
	var e invalidError
	if errors.As(err, &e) {
		return e.param
	}
	return ""
}

// Config configures a Service.
type Config struct {
	// MaxLoaded is how many models may be in memory at once, counting one
	// being loaded and evicted ones still in use; default 1.
	MaxLoaded int
	// DefaultMaxTokens bounds a completion whose request sets no
	// max_tokens; default 512 (the room the context window leaves after
	// the prompt bounds it too).
	DefaultMaxTokens int
	// RequestTimeout bounds each request, waiting included; generation
	// stops there with the text so far. Default 10 minutes.
	RequestTimeout time.Duration
	// Threads is the CPU threads each model's kernels use; 0 = GOMAXPROCS.
	Threads int
	Logger  *slog.Logger
	// Load loads a model directory; default engine.LoadWithAdapter with
	// LoadOptions (a PEFT adapter directory is attached to its base) on the
	// service's one CPU device.
	Load func(dir string) (*engine.Model, error)
	// Unload, when set, is called once the service holds a model no more
	// (evicted, and no request uses it), before another load can take its
	// place; the garbage collector frees the model's memory. It runs
	// under the service's lock and must not call the Service.
	Unload func(dir string, m *engine.Model)
	// Clock tells the time for request deadlines; default time.Now.
	Clock func() time.Time
	// MaxBatch is the most generations decoded together; more wait in
	// the queue. Default 16.
	MaxBatch int
	// MaxQueue is the most requests waiting for a place in the batch;
	// more are refused with ErrBusy. Default 64.
	MaxQueue int
	// KVMemory bounds the bytes of KV cache the running generations may
	// hold together (hone serve --kv-memory); 0 = no bound. Each request
	// counts its cache at its full length (prompt + max_tokens) from the
	// turn it starts; one that alone cannot fit is refused as invalid, and
	// others wait until enough running ones end.
	KVMemory int64
}

// Service loads models on demand and completes requests with them.
type Service struct {
	cfg     Config
	log     *slog.Logger
	loading chan struct{} // one slot: loads are serialized
	batch   *batcher      // the device's one decode loop

	mu      sync.Mutex
	lru     *list.List               // of *loaded, most recent first
	byDir   map[string]*list.Element // guarded by mu
	live    int                      // models in memory: cached, being loaded, or evicted but in use
	pending int                      // evicted models still in use
	freed   chan struct{}            // closed (and replaced) whenever live drops
}

// loaded is one model in memory with what formatting and decoding need.
type loaded struct {
	dir     string
	m       *engine.Model
	tok     *tokenizer.Tokenizer
	tmpl    *chattemplate.Template // nil: the model has no chat template
	stop    []int                  // end-of-generation ids
	refs    int                    // requests using it; guarded by Service.mu
	evicted bool                   // out of the cache; freed when refs reaches 0
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.MaxLoaded < 0 || cfg.DefaultMaxTokens < 0 || cfg.Threads < 0 || cfg.RequestTimeout < 0 || cfg.MaxBatch < 0 || cfg.MaxQueue < 0 || cfg.KVMemory < 0 {
		return nil, errors.New("serving: MaxLoaded, DefaultMaxTokens, RequestTimeout, Threads, MaxBatch, MaxQueue and KVMemory must not be negative")
	}
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, 16)
	cfg.MaxQueue = cmp.Or(cfg.MaxQueue, 64)
	if cfg.MaxLoaded == 0 {
		cfg.MaxLoaded = 1
	}
	if cfg.DefaultMaxTokens == 0 {
		cfg.DefaultMaxTokens = 512
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Load == nil {
		dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: cfg.Threads})
		if err != nil {
			return nil, err
		}
		cfg.Load = func(dir string) (*engine.Model, error) { return loadModel(dir, dev) }
	}
	return &Service{cfg: cfg, log: cfg.Logger, loading: make(chan struct{}, 1), batch: &batcher{maxBatch: cfg.MaxBatch, maxQueue: cfg.MaxQueue, kvBudget: cfg.KVMemory},
		lru: list.New(), byDir: map[string]*list.Element{}, freed: make(chan struct{})}, nil
}

// Queued is how many requests wait for a place in the running batch.
func (s *Service) Queued() int { return s.batch.Queued() }

// Loaded returns the directories of the models in the cache, most
// recently used first.
func (s *Service) Loaded() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for e := s.lru.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(*loaded).dir)
	}
	return out
}

// lookup returns the cached model of dir, marking it most recently used
// and counting one more request using it.
func (s *Service) lookup(dir string) *loaded {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.byDir[dir]; ok {
		s.lru.MoveToFront(e)
		l := e.Value.(*loaded)
		l.refs++
		return l
	}
	return nil
}

// model returns dir's model, loading it when it is not in memory; the
// caller calls release once done with it.
func (s *Service) model(ctx context.Context, dir string) (l *loaded, release func(), err error) {
	dir = filepath.Clean(dir)
	if l := s.lookup(dir); l != nil {
		return l, func() { s.release(l) }, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	select {
	case s.loading <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	defer func() { <-s.loading }()
	if l := s.lookup(dir); l != nil { // loaded while we waited
		return l, func() { s.release(l) }, nil
	}
	if err := s.makeRoom(ctx); err != nil {
		return nil, nil, err
	}
	start := time.Now()
	l, err = s.load(dir)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.drop()
		return nil, nil, err
	}
	l.refs = 1
	s.byDir[dir] = s.lru.PushFront(l)
	s.log.Info("model loaded", "dir", dir, "duration", time.Since(start))
	return l, func() { s.release(l) }, nil
}

// makeRoom reserves a place for one more model, evicting the least
// recently used models (unused ones first) and, when those are still in
// use, waiting until their requests end. The caller holds the load slot,
// so no other load competes for the room.
func (s *Service) makeRoom(ctx context.Context) error {
	for {
		s.mu.Lock()
		for s.live-s.pending >= s.cfg.MaxLoaded && s.lru.Len() > 0 {
			s.evict()
		}
		if s.live < s.cfg.MaxLoaded {
			s.live++
			s.mu.Unlock()
			return nil
		}
		freed := s.freed
		s.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return fmt.Errorf("waiting for a model in use to be unloaded (--max-loaded-models %d): %w", s.cfg.MaxLoaded, ctx.Err())
		}
	}
}

// evict takes the least recently used model out of the cache, preferring
// one no request uses; a model in use is freed when its last request ends.
// s.mu is held and the cache is not empty.
func (s *Service) evict() {
	e := s.lru.Back()
	for u := e; u != nil; u = u.Prev() {
		if u.Value.(*loaded).refs == 0 {
			e = u
			break
		}
	}
	l := s.lru.Remove(e).(*loaded)
	delete(s.byDir, l.dir)
	l.evicted = true
	s.log.Info("model evicted", "dir", l.dir, "in_use", l.refs)
	if l.refs == 0 {
		s.unload(l)
	} else {
		s.pending++
	}
}

// release ends one request's use of l.
func (s *Service) release(l *loaded) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.refs--; l.refs == 0 && l.evicted {
		s.pending--
		s.unload(l)
	}
}

// unload forgets l; s.mu is held.
func (s *Service) unload(l *loaded) {
	if s.cfg.Unload != nil {
		s.cfg.Unload(l.dir, l.m)
	}
	l.m = nil
	s.drop()
}

// drop gives a model's place back and wakes a load waiting for room; s.mu
// is held.
func (s *Service) drop() {
	s.live--
	close(s.freed)
	s.freed = make(chan struct{})
}

func (s *Service) load(dir string) (*loaded, error) {
	files, err := engine.ModelFilesDir(dir) // an adapter's tokenizer is its base's
	if err != nil {
		return nil, fmt.Errorf("serving: load %s: %w", dir, err)
	}
	tok, err := tokenizer.LoadDir(files)
	if err != nil {
		return nil, fmt.Errorf("serving: load %s: %w", dir, err)
	}
	tmpl, err := chattemplate.FromModelDir(files)
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
