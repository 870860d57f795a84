// Package runs is hone's run service: it validates and creates fine-tuning
// runs (the run row and its river job in one transaction), lists, cancels
// and deletes them, and works them: a river worker claims a run under a
// lease, calls the Trainer (package train in production) with a work
// directory under HONE_HOME/runs/<name>/work, records metrics,
// checkpoints, eval-prompt outputs and events in the store, and registers
// the final model in the catalog.
//
// Crash safety: a worker renews its run's lease from the moment it claims
// the run until it has recorded the outcome (through the final eval, eval
// prompts, checkpoint saves and registration). A reaper in every working
// process re-queues runs whose lease expired (the worker was killed),
// compare-and-setting the lease it read; the new job resumes from the work
// directory's checkpoint. The run's job_id fences stale jobs. Cancelling
// sets STOPPING; the worker polls the run and cancels the training
// context, which saves a stop checkpoint, then sets STOPPED.
//
// Paths are confined to the data roots when a run is created and again
// when its worker starts it, so a file replaced by a symlink out of the
// roots after creation fails the run.
//
// A *Service is safe for concurrent use. Start/Stop bracket the workers.
package runs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"hone/catalog"
	"hone/modelref"
	"hone/store"
)

// ErrInvalid marks a request refused for its content (HTTP 400); the
// message says precisely why (file:line for data).
var ErrInvalid = errors.New("invalid request")

// ErrState marks an operation the run's state forbids (HTTP 409), e.g.
// deleting a run that is still running.
var ErrState = errors.New("run state forbids this")

type kindError struct {
	kind error
	msg  string
}

func (e kindError) Error() string        { return e.msg }
func (e kindError) Is(target error) bool { return target == e.kind }

func invalidf(format string, a ...any) error {
	return kindError{ErrInvalid, fmt.Sprintf(format, a...)}
}

func statef(format string, a ...any) error { return kindError{ErrState, fmt.Sprintf(format, a...)} }

// Config configures a Service.
type Config struct {
	Store   *store.Store
	Catalog *catalog.Catalog
	Models  *modelref.Resolver
	Trainer Trainer // default: package train
	// Home is HONE_HOME: run state lives in Home/runs/<name>.
	Home string
	// DataRoots confine request paths (data, eval data, custom weights,
	// local model directories); default Home/data (see DefaultDataRoots).
	DataRoots   []string
	DefaultUser string // when a request names none; default "hone"
	Logger      *slog.Logger
	Clock       func() time.Time

	// Work runs the training worker and reaper in this process.
	Work        bool
	Concurrency int           // runs trained at once by this process; default 1
	WorkerID    string        // default host-pid-random-namespace (see deadLocalWorker)
	LeaseTTL    time.Duration // default 30s; a worker silent this long is presumed dead
	PollEvery   time.Duration // cancel poll and lease renewal tick; default LeaseTTL/10, at most 1s
	FetchPoll   time.Duration // queue poll interval; default 1s
	// RetryEvery is the first wait before a store write is tried again
	// (records, the outcome), doubling up to 16 times it; default 250ms.
	RetryEvery time.Duration
	// StoreWait bounds how long a worker waits for an absent store at the
	// end of a run (its records delivered, its outcome recorded) and for
	// confirming its lease before a commit; default 10m.
	StoreWait time.Duration
	// StopGrace bounds how long a cancelled or shut-down run may take to
	// return before the worker stops waiting for it (blocked in I/O: a
	// FIFO, a stalled network file system); default 5s.
	StopGrace time.Duration
	// InlineValidateMax is the most training + eval data (bytes) a create
	// request validates before it answers; more is validated in the
	// background with the run PENDING (background.go). Default 16 MiB;
	// negative: always inline.
	InlineValidateMax int64
	// ValidateConcurrency bounds the background validations at once;
	// default 2.
	ValidateConcurrency int
	// ValidateProgressEvery spaces a background validation's progress
	// events; default 10s.
	ValidateProgressEvery time.Duration
	// Gang configures this worker's part in multi-node runs (gang.go).
	Gang GangConfig
}

// Service implements the runs API and worker.
type Service struct {
	cfg    Config
	st     *store.Store
	cat    *catalog.Catalog
	models *modelref.Resolver
	tr     Trainer
	log    *slog.Logger
	clock  func() time.Time
	roots  []string
	q      queue
	// nsTag identifies this process's PID namespace (see workerID).
	nsTag string

	mu      sync.Mutex
	stopBG  context.CancelFunc
	bgDone  chan struct{}
	started bool

	val validators

	slots chan struct{} // see takeSlot
	// gangs counts the ranks this worker holds in others' runs; they run
	// under workCtx, which ends when the service stops.
	gangs   sync.WaitGroup
	workCtx context.Context
}

// New validates cfg, fills defaults and prepares the queue (migrating its
// tables). Call Start to begin working.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Catalog == nil || cfg.Models == nil {
		return nil, errors.New("runs: Store, Catalog and Models are required")
	}
	if cfg.Trainer == nil {
		cfg.Trainer = trainPackage{}
	}
	if cfg.Home == "" {
		return nil, errors.New("runs: Home is required")
	}
	home, err := filepath.Abs(cfg.Home)
	if err != nil {
		return nil, fmt.Errorf("runs: home: %w", err)
	}
	cfg.Home = home
	if len(cfg.DataRoots) == 0 {
		cfg.DataRoots = []string{filepath.Join(home, "data")}
		if err := os.MkdirAll(cfg.DataRoots[0], 0o755); err != nil {
			return nil, fmt.Errorf("runs: %w", err)
		}
	}
	roots, err := resolveRoots(cfg.DataRoots)
	if err != nil {
		return nil, err
	}
	if cfg.DefaultUser == "" {
		cfg.DefaultUser = "hone"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 1
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 30 * time.Second
	}
	if cfg.PollEvery == 0 {
		cfg.PollEvery = min(cfg.LeaseTTL/10, time.Second)
	}
	if cfg.FetchPoll == 0 {
		cfg.FetchPoll = time.Second
	}
	if cfg.RetryEvery == 0 {
		cfg.RetryEvery = 250 * time.Millisecond
	}
	if cfg.StoreWait == 0 {
		cfg.StoreWait = 10 * time.Minute
	}
	if cfg.RetryEvery < 0 || cfg.StoreWait < 0 {
		return nil, fmt.Errorf("runs: bad retry config: retry every %s, store wait %s", cfg.RetryEvery, cfg.StoreWait)
	}
	if cfg.InlineValidateMax == 0 {
		cfg.InlineValidateMax = defaultInlineValidateMax
	}
	if cfg.ValidateConcurrency <= 0 {
		cfg.ValidateConcurrency = 2
	}
	if cfg.ValidateProgressEvery <= 0 {
		cfg.ValidateProgressEvery = 10 * time.Second
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 5 * time.Second
	}
	if cfg.Concurrency < 0 || cfg.LeaseTTL < 0 || cfg.PollEvery <= 0 || cfg.PollEvery >= cfg.LeaseTTL || cfg.FetchPoll < time.Millisecond {
		return nil, fmt.Errorf("runs: bad timing config: concurrency %d, lease %s, poll %s, fetch poll %s",
			cfg.Concurrency, cfg.LeaseTTL, cfg.PollEvery, cfg.FetchPoll)
	}
	if err := cfg.Gang.fill(); err != nil {
		return nil, fmt.Errorf("runs: %w", err)
	}
	tag := namespaceTag()
	if cfg.WorkerID == "" {
		cfg.WorkerID = workerID(tag)
	}
	s := &Service{cfg: cfg, st: cfg.Store, cat: cfg.Catalog, models: cfg.Models, tr: cfg.Trainer,
		log: cfg.Logger, clock: cfg.Clock, roots: roots, nsTag: tag, slots: make(chan struct{}, cfg.Concurrency)}
	s.initValidators()
	s.log.Info("data roots in force: request paths must lie in these", "roots", roots)
	q, err := newQueue(ctx, cfg.Store, queueConfig{work: cfg.Work, concurrency: cfg.Concurrency,
		fetchPoll: cfg.FetchPoll, logger: cfg.Logger.With("component", "river"), id: cfg.WorkerID}, &trainWorker{s: s})
	if err != nil {
		return nil, err
	}
	s.q = q
	return s, nil
}

// Confine is the service's path check, for the model resolver.
func (s *Service) Confine(p string) (string, error) { return s.resolvePath(p) }

// Start validates again the PENDING runs whose validation was lost, and
// begins working jobs and reaping dead workers' runs (if Work).
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.resumeValidations(ctx); err != nil {
		return err
	}
	if s.started || !s.cfg.Work {
		return nil
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.workCtx = bg
	if err := s.q.start(ctx); err != nil {
		cancel()
		return fmt.Errorf("runs: start queue: %w", err)
	}
	s.stopBG, s.bgDone, s.started = cancel, make(chan struct{}), true
	go func() {
		defer close(s.bgDone)
		gangDone := make(chan struct{})
		go func() {
			defer close(gangDone)
			s.gangLoop(bg)
		}()
		s.reapLoop(bg)
		<-gangDone
	}()
	s.log.Info("worker started", "worker", s.cfg.WorkerID, "concurrency", s.cfg.Concurrency)
	return nil
}

// Stop cancels running training (each keeps its last checkpoint and is
// re-queued to resume) and waits for the workers, at most until ctx ends.
func (s *Service) Stop(ctx context.Context) error {
	s.stopValidators()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		return nil
	}
	s.started = false
	s.stopBG()
	<-s.bgDone
	err := s.q.stop(ctx)
	return errors.Join(err, s.waitRanks(ctx))
}

func (s *Service) runDir(name string) string { return filepath.Join(s.cfg.Home, "runs", name) }

// transition applies up to run when cond holds and records its event in the
// same transaction, so a reader who sees the new status also sees why.
func (s *Service) transition(ctx context.Context, run string, cond store.RunCond, up store.RunUpdate, typ, msg string) (bool, error) {
	var ok bool
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		var err error
		if ok, err = tx.UpdateRun(ctx, run, cond, up); err != nil || !ok {
			return err
		}
		return tx.AddEvent(ctx, run, store.Event{Time: s.clock(), Type: typ, Message: msg})
	})
	return ok, err
}

// StoreHealth reports whether the store answers.
func (s *Service) StoreHealth(ctx context.Context) error { return s.st.Ping(ctx) }

func (s *Service) event(ctx context.Context, run, typ, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if err := s.st.AddEvent(ctx, run, store.Event{Time: s.clock(), Type: typ, Message: msg}); err != nil {
		s.log.Error("record event", "run", run, "type", typ, "err", err)
	}
}
