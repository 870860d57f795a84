package runs

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"

	"hone/store"
)

// TrainArgs is the queue job that trains one run. Its kind is stable: jobs
// already queued by an older hone must still be worked by a newer one.
type TrainArgs struct {
	Run string `json:"run"`
}

// Kind implements river.JobArgs.
func (TrainArgs) Kind() string { return "hone.train.v1" }

// queue is the little of river the service uses, independent of the
// driver's transaction type.
type queue interface {
	insertTx(ctx context.Context, tx *store.Tx, args TrainArgs) (int64, error)
	cancel(ctx context.Context, jobID int64) error
	start(ctx context.Context) error
	stop(ctx context.Context) error
}

type riverQueue[TTx any] struct {
	client *river.Client[TTx]
	txOf   func(*store.Tx) TTx
}

func (q *riverQueue[TTx]) insertTx(ctx context.Context, tx *store.Tx, args TrainArgs) (int64, error) {
	res, err := q.client.InsertTx(ctx, q.txOf(tx), args, &river.InsertOpts{MaxAttempts: 25})
	if err != nil {
		return 0, fmt.Errorf("enqueue run %s: %w", args.Run, err)
	}
	return res.Job.ID, nil
}

func (q *riverQueue[TTx]) cancel(ctx context.Context, jobID int64) error {
	_, err := q.client.JobCancel(ctx, jobID)
	return err
}

func (q *riverQueue[TTx]) start(ctx context.Context) error { return q.client.Start(ctx) }

func (q *riverQueue[TTx]) stop(ctx context.Context) error { return q.client.StopAndCancel(ctx) }

type queueConfig struct {
	work        bool // run workers in this process
	concurrency int
	fetchPoll   time.Duration
	logger      *slog.Logger
	id          string
}

// newQueue migrates river's tables and builds a client for the store's
// database: riversqlite on SQLite, riverpgxv5 on PostgreSQL.
func newQueue(ctx context.Context, st *store.Store, cfg queueConfig, w river.Worker[TrainArgs]) (queue, error) {
	var q queue
	err := st.WithMigrationLock(ctx, func() error {
		var err error
		switch st.Dialect() {
		case store.Postgres:
			q, err = buildQueue(ctx, riverpgxv5.New(st.PgxPool()), func(tx *store.Tx) pgx.Tx { return tx.PgxTx() }, cfg, w, false)
		default:
			q, err = buildQueue(ctx, riversqlite.New(st.SQLDB()), func(tx *store.Tx) *sql.Tx { return tx.SQLTx() }, cfg, w, true)
		}
		return err
	})
	return q, err
}

func buildQueue[TTx any](ctx context.Context, drv riverdriver.Driver[TTx], txOf func(*store.Tx) TTx,
	cfg queueConfig, w river.Worker[TrainArgs], pollOnly bool) (*riverQueue[TTx], error) {
	m, err := rivermigrate.New(drv, &rivermigrate.Config{Logger: cfg.logger})
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if _, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return nil, fmt.Errorf("queue: migrate: %w", err)
	}
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, w); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	rc := &river.Config{
		ID:                cfg.id,
		Logger:            cfg.logger,
		Workers:           workers,
		PollOnly:          pollOnly,
		FetchPollInterval: cfg.fetchPoll,
		FetchCooldown:     min(cfg.fetchPoll, 100*time.Millisecond),
		// A training job runs for hours: river never times it out, and
		// crashed workers are detected by the run lease (see reaper), not
		// by river's rescuer, which would re-run live jobs.
		JobTimeout:           -1,
		RescueStuckJobsAfter: 7 * 24 * time.Hour,
	}
	if cfg.work {
		rc.Queues = map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.concurrency}}
	}
	client, err := river.NewClient(drv, rc)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return &riverQueue[TTx]{client: client, txOf: txOf}, nil
}
