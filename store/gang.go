package store

import (
	"context"
	"fmt"
	"time"
)

// schemaGang adds gang-scheduled runs (a run trained by several workers,
// one rank each): the workers that work the queue, each run's current
// rendezvous (where rank 0's store listens and the run's shared secret),
// and the ranks that joined each claim of the run.
var schemaGang = []string{
	`CREATE TABLE IF NOT EXISTS hone_workers (
		id TEXT PRIMARY KEY,
		host TEXT NOT NULL,
		started_at BIGINT NOT NULL,
		seen_at BIGINT NOT NULL,
		slots BIGINT NOT NULL DEFAULT 1
	)`,
	`CREATE TABLE IF NOT EXISTS hone_run_gangs (
		run_name TEXT PRIMARY KEY,
		epoch BIGINT NOT NULL,
		size BIGINT NOT NULL,
		store_addr TEXT NOT NULL,
		secret TEXT NOT NULL,
		created_at BIGINT NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS hone_run_ranks (
		run_name TEXT NOT NULL,
		epoch BIGINT NOT NULL,
		rank_no BIGINT NOT NULL,
		worker TEXT NOT NULL,
		host TEXT NOT NULL,
		joined_at BIGINT NOT NULL,
		seen_at BIGINT NOT NULL,
		left_at BIGINT NOT NULL DEFAULT 0,
		note TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (run_name, epoch, rank_no)
	)`,
	// A worker is one rank of a claim, never two.
	`CREATE UNIQUE INDEX IF NOT EXISTS hone_run_ranks_worker ON hone_run_ranks (run_name, epoch, worker)`,
	// What a worker holds (YieldGang counts its free slots).
	`CREATE INDEX IF NOT EXISTS hone_run_ranks_held ON hone_run_ranks (worker, left_at)`,
	`CREATE INDEX IF NOT EXISTS hone_runs_lease_owner ON hone_runs (lease_owner)`,
}

// Worker is a process working the queue, as it last reported itself.
type Worker struct {
	ID        string
	Host      string // its collective address (host), where its ranks listen
	StartedAt time.Time
	SeenAt    time.Time
	Slots     int // runs it trains at once (runs it leads and ranks it holds); 0 counts as 1
}

// Gang is the rendezvous of one claim (lease epoch) of a multi-node run.
// Secret admits ranks to rank 0's store: it is for the run's workers only,
// never shown in events, logs or the API.
type Gang struct {
	Run       string
	Epoch     int64
	Size      int
	StoreAddr string
	Secret    string
	CreatedAt time.Time
}

// Rank is one worker's membership in a claim of a run.
type Rank struct {
	Run      string
	Epoch    int64
	Rank     int
	Worker   string
	Host     string
	JoinedAt time.Time
	SeenAt   time.Time
	LeftAt   time.Time // zero while it is in
	Note     string    // why it left
}

// SeeWorker records that worker w is alive (inserting it the first time).
func (o ops) SeeWorker(ctx context.Context, w Worker) error {
	_, err := o.q.exec(ctx, `INSERT INTO hone_workers (id, host, started_at, seen_at, slots) VALUES (?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET host = excluded.host, seen_at = excluded.seen_at, slots = excluded.slots`,
		w.ID, w.Host, micros(w.StartedAt), micros(w.SeenAt), max(w.Slots, 1))
	if err != nil {
		return fmt.Errorf("store: record worker %s: %w", w.ID, err)
	}
	return nil
}

// CountWorkers counts the workers seen at or after since.
func (o ops) CountWorkers(ctx context.Context, since time.Time) (int, error) {
	var n int
	if err := o.one(ctx, `SELECT COUNT(*) FROM hone_workers WHERE seen_at >= ?`, []any{micros(since)}, &n); err != nil {
		return 0, fmt.Errorf("store: count workers: %w", err)
	}
	return n, nil
}

// OpenGang records g as the run's rendezvous, replacing an earlier claim's.
func (o ops) OpenGang(ctx context.Context, g Gang) error {
	_, err := o.q.exec(ctx, `INSERT INTO hone_run_gangs (run_name, epoch, size, store_addr, secret, created_at) VALUES (?,?,?,?,?,?)
		ON CONFLICT (run_name) DO UPDATE SET epoch = excluded.epoch, size = excluded.size, store_addr = excluded.store_addr,
		secret = excluded.secret, created_at = excluded.created_at`,
		g.Run, g.Epoch, g.Size, g.StoreAddr, g.Secret, micros(g.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: open the rendezvous of run %s: %w", g.Run, err)
	}
	return nil
}

// CloseGang removes the run's rendezvous of epoch (its secret with it).
func (o ops) CloseGang(ctx context.Context, run string, epoch int64) error {
	if _, err := o.q.exec(ctx, `DELETE FROM hone_run_gangs WHERE run_name = ? AND epoch = ?`, run, epoch); err != nil {
		return fmt.Errorf("store: close the rendezvous of run %s: %w", run, err)
	}
	return nil
}

// OpenGangs lists the rendezvous that still want ranks: their run is
// STARTING under the same claim and fewer than Size ranks have joined.
// The oldest run comes first (creation time, then name): workers fill the
// rendezvous in that order, and a younger one yields to an older one
// (YieldGang), so runs competing for the same workers always progress.
// With before set, only the runs created before that run are listed.
func (o ops) OpenGangs(ctx context.Context, before ...string) ([]Gang, error) {
	q, args := `SELECT g.run_name, g.epoch, g.size, g.store_addr, g.secret, g.created_at
		FROM hone_run_gangs g JOIN hone_runs r ON r.name = g.run_name AND r.lease_epoch = g.epoch
		WHERE r.status = ? AND `+gangShort, []any{string(StatusStarting)}
	if len(before) > 0 {
		q += ` AND EXISTS (SELECT 1 FROM hone_runs me WHERE me.name = ? AND ` + olderThanMe + `)`
		args = append(args, before[0])
	}
	var out []Gang
	err := o.all(ctx, q+` ORDER BY r.created_at, r.name`, args, func(r rows) error {
		var g Gang
		var t int64
		err := r.Scan(&g.Run, &g.Epoch, &g.Size, &g.StoreAddr, &g.Secret, &t)
		g.CreatedAt = fromMicros(t)
		out = append(out, g)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list open rendezvous: %w", err)
	}
	return out, nil
}

// gangShort: rendezvous g has fewer ranks than it needs. olderThanMe: run
// r was created before run me (the seniority OpenGangs orders by).
const (
	gangShort   = `(SELECT COUNT(*) FROM hone_run_ranks k WHERE k.run_name = g.run_name AND k.epoch = g.epoch) < g.size`
	olderThanMe = `(r.created_at < me.created_at OR (r.created_at = me.created_at AND r.name < me.name))`
)

// GangOpen reports whether the claim's rendezvous is still open: rank 0
// has neither closed it (given up, yielded, finished) nor lost the run.
func (o ops) GangOpen(ctx context.Context, run string, epoch int64) (bool, error) {
	var n int
	err := o.one(ctx, `SELECT COUNT(*) FROM hone_run_gangs g JOIN hone_runs r ON r.name = g.run_name AND r.lease_epoch = g.epoch
		WHERE g.run_name = ? AND g.epoch = ? AND r.status IN (?, ?)`,
		[]any{run, epoch, string(StatusStarting), string(StatusRunning)}, &n)
	if err != nil {
		return false, fmt.Errorf("store: read the rendezvous of run %s: %w", run, err)
	}
	return n > 0, nil
}

// lockShortGang locks the claim's rendezvous row (so that joining it and
// closing it are serialized) and reports whether it is there and short of
// ranks.
func (o ops) lockShortGang(ctx context.Context, run string, epoch int64) (bool, error) {
	n, err := o.q.exec(ctx, `UPDATE hone_run_gangs SET size = size WHERE run_name = ? AND epoch = ?`, run, epoch)
	if err != nil || n == 0 {
		return false, err
	}
	var short int
	err = o.one(ctx, `SELECT COUNT(*) FROM hone_run_gangs g WHERE g.run_name = ? AND g.epoch = ? AND `+gangShort,
		[]any{run, epoch}, &short)
	return short > 0, err
}

// JoinRank takes rank k.Rank of the claim for k.Worker; false when the
// rank is taken or the worker already holds one, or (ranks other than 0,
// which opens the rendezvous) when the rendezvous is closed or full.
func (s *Store) JoinRank(ctx context.Context, k Rank) (bool, error) {
	var ok bool
	err := s.InTx(ctx, func(tx *Tx) error {
		if k.Rank > 0 {
			short, err := tx.lockShortGang(ctx, k.Run, k.Epoch)
			if err != nil || !short {
				return err
			}
		}
		n, err := tx.q.exec(ctx, `INSERT INTO hone_run_ranks (run_name, epoch, rank_no, worker, host, joined_at, seen_at) VALUES (?,?,?,?,?,?,?)
			ON CONFLICT DO NOTHING`, k.Run, k.Epoch, k.Rank, k.Worker, k.Host, micros(k.JoinedAt), micros(k.JoinedAt))
		ok = n > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: join run %s as rank %d: %w", k.Run, k.Rank, err)
	}
	return ok, nil
}

// YieldNote says why a rendezvous closed that yielded to run to.
func YieldNote(to string) string {
	return "the run yielded its workers to older run " + to + ", whose rendezvous needed them"
}

// YieldGang closes the claim's rendezvous when an older run's rendezvous
// needs the workers this one holds, and returns that run ("" when it does
// not yield). It yields only while it is short of ranks (a complete one
// trains), to the oldest open rendezvous (OpenGangs' order) whose rank 0
// still holds its lease at now, that the workers seen since liveSince can
// complete (one that cannot would take the workers for nothing), and that
// some worker of this one is not part of yet. The ranks that joined are
// recorded as left, so that their workers leave and are free for the
// older run. The oldest open rendezvous never yields: runs competing for
// the same workers complete one after another instead of each holding
// some and timing out.
//
// Rank 0 asks this every poll while it waits: the question is read
// first, and the rendezvous row is locked (serialized with joins) and
// asked again only when it would yield.
func (s *Store) YieldGang(ctx context.Context, run string, epoch int64, now, liveSince time.Time) (string, error) {
	to, err := s.yieldTo(ctx, run, epoch, now, liveSince)
	if err == nil && to != "" {
		err = s.InTx(ctx, func(tx *Tx) error {
			to = ""
			short, err := tx.lockShortGang(ctx, run, epoch)
			if err != nil || !short {
				return err
			}
			if to, err = tx.yieldTo(ctx, run, epoch, now, liveSince); err != nil || to == "" {
				return err
			}
			if _, err := tx.q.exec(ctx, `DELETE FROM hone_run_gangs WHERE run_name = ? AND epoch = ?`, run, epoch); err != nil {
				return err
			}
			_, err = tx.q.exec(ctx, `UPDATE hone_run_ranks SET left_at = ?, note = ? WHERE run_name = ? AND epoch = ? AND left_at = 0`,
				micros(now), YieldNote(to), run, epoch)
			return err
		})
	}
	if err != nil {
		return "", fmt.Errorf("store: yield the rendezvous of run %s: %w", run, err)
	}
	return to, nil
}

// yieldTo is the run YieldGang would yield to ("" if none), while this
// claim's rendezvous is open and short of ranks. An older rendezvous g can
// complete when its ranks and the live workers that could join it are at
// least its size. A worker could join when it is not part of g yet and
// has a free slot, counting the slot this run holds (yielding frees it):
// its slots exceed the leases it holds (runs it leads) and the ranks it
// holds in others' runs (while their heartbeat is live). A worker busy
// with other runs cannot join, so it must not make this run yield.
func (o ops) yieldTo(ctx context.Context, run string, epoch int64, now, liveSince time.Time) (string, error) {
	var to string
	err := o.all(ctx, `SELECT g.run_name FROM hone_run_gangs g
		JOIN hone_runs r ON r.name = g.run_name AND r.lease_epoch = g.epoch
		JOIN hone_runs me ON me.name = ?
		WHERE EXISTS (SELECT 1 FROM hone_run_gangs mg WHERE mg.run_name = me.name AND mg.epoch = ?
			AND (SELECT COUNT(*) FROM hone_run_ranks k WHERE k.run_name = mg.run_name AND k.epoch = mg.epoch) < mg.size)
		AND r.status = ? AND r.lease_until > ? AND `+gangShort+` AND `+olderThanMe+`
		AND g.size <= (SELECT COUNT(*) FROM hone_run_ranks k WHERE k.run_name = g.run_name AND k.epoch = g.epoch)
			+ (SELECT COUNT(*) FROM hone_workers w WHERE w.seen_at >= ?
				AND NOT EXISTS (SELECT 1 FROM hone_run_ranks o WHERE o.run_name = g.run_name AND o.epoch = g.epoch AND o.worker = w.id)
				AND w.slots > (SELECT COUNT(*) FROM hone_runs l WHERE l.lease_owner = w.id AND l.lease_until > ? AND l.name <> me.name)
					+ (SELECT COUNT(*) FROM hone_run_ranks b WHERE b.worker = w.id AND b.left_at = 0 AND b.rank_no > 0
						AND b.seen_at >= ? AND b.run_name <> me.name))
		AND EXISTS (SELECT 1 FROM hone_run_ranks m WHERE m.run_name = me.name AND m.epoch = ? AND m.left_at = 0
			AND NOT EXISTS (SELECT 1 FROM hone_run_ranks o WHERE o.run_name = g.run_name AND o.epoch = g.epoch AND o.worker = m.worker))
		ORDER BY r.created_at, r.name LIMIT 1`,
		[]any{run, epoch, string(StatusStarting), micros(now), micros(liveSince), micros(now), micros(liveSince), epoch},
		func(r rows) error { return r.Scan(&to) })
	return to, err
}

// TouchRank records that a rank is still alive.
func (o ops) TouchRank(ctx context.Context, run string, epoch int64, rank int, now time.Time) error {
	_, err := o.q.exec(ctx, `UPDATE hone_run_ranks SET seen_at = ? WHERE run_name = ? AND epoch = ? AND rank_no = ? AND left_at = 0`,
		micros(now), run, epoch, rank)
	return err
}

// LeaveRank records that a rank left (once: the first reason stays).
func (o ops) LeaveRank(ctx context.Context, run string, epoch int64, rank int, now time.Time, note string) error {
	_, err := o.q.exec(ctx, `UPDATE hone_run_ranks SET left_at = ?, note = ? WHERE run_name = ? AND epoch = ? AND rank_no = ? AND left_at = 0`,
		micros(now), note, run, epoch, rank)
	if err != nil {
		return fmt.Errorf("store: record rank %d leaving run %s: %w", rank, run, err)
	}
	return nil
}

// ListRanks lists the ranks of every claim of the run, oldest claim first.
func (o ops) ListRanks(ctx context.Context, run string) ([]Rank, error) {
	out := []Rank{}
	err := o.all(ctx, `SELECT epoch, rank_no, worker, host, joined_at, seen_at, left_at, note FROM hone_run_ranks
		WHERE run_name = ? ORDER BY epoch, rank_no`, []any{run}, func(r rows) error {
		k := Rank{Run: run}
		var j, s, l int64
		err := r.Scan(&k.Epoch, &k.Rank, &k.Worker, &k.Host, &j, &s, &l, &k.Note)
		k.JoinedAt, k.SeenAt = fromMicros(j), fromMicros(s)
		if l != 0 {
			k.LeftAt = fromMicros(l)
		}
		out = append(out, k)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list the ranks of run %s: %w", run, err)
	}
	return out, nil
}
