package runs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"hone/store"
)

// leaseKeeper renews one run's lease in the background and watches for a
// cancel request, from the claim until stop. Its epoch is the claim's
// fencing token: every write of the run (renewals, records, checkpoints,
// the final model) requires the run's lease_epoch to be still this one.
type leaseKeeper struct {
	s      *Service
	name   string
	jobID  int64
	epoch  int64
	cancel context.CancelCauseFunc
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once

	mu         sync.Mutex
	validUntil time.Time // the lease as last confirmed by the store, by this worker's clock
	lost       bool
}

// holdLease starts renewing the lease that job jobID claimed with epoch,
// valid until `until`. It cancels the training context with
// errStopRequested when the run is asked to stop (and keeps renewing while
// the trainer saves its stop checkpoint), or with errLeaseLost when
// another job owns the run now.
func (s *Service) holdLease(ctx context.Context, name string, jobID, epoch int64, until time.Time, cancelTrain context.CancelCauseFunc) *leaseKeeper {
	k := &leaseKeeper{s: s, name: name, jobID: jobID, epoch: epoch, cancel: cancelTrain,
		quit: make(chan struct{}), done: make(chan struct{}), validUntil: until}
	// The lease was set at the claim, just before: read the time here, not
	// in the goroutine, which may first run much later on a busy machine.
	lastRenew := s.clock()
	go func() {
		defer close(k.done)
		t := time.NewTicker(s.cfg.PollEvery)
		defer t.Stop()
		for {
			select {
			case <-k.quit:
				return
			case <-t.C:
			}
			if !s.tendLease(ctx, k, &lastRenew) {
				return
			}
		}
	}()
	return k
}

// stop ends the renewals and waits for the keeper to exit.
func (k *leaseKeeper) stop() {
	k.once.Do(func() { close(k.quit) })
	<-k.done
}

// lose notes that the run is another job's now and cancels training.
func (k *leaseKeeper) lose() {
	k.mu.Lock()
	k.lost = true
	k.mu.Unlock()
	k.cancel(errLeaseLost)
}

func (k *leaseKeeper) isLost() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lost
}

// renewed notes a renewal that the store confirmed, sent at `at`.
func (k *leaseKeeper) renewed(at time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.validUntil = at.Add(k.s.cfg.LeaseTTL)
}

// heldAt reports whether the lease as last confirmed still holds at now.
// A margin of a tenth of the lease covers clock drift between workers.
func (k *leaseKeeper) heldAt(now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return !k.lost && now.Before(k.validUntil.Add(-k.s.cfg.LeaseTTL/10))
}

// renew extends the lease under this claim's token; ok false means the
// run is no longer this job's.
func (s *Service) renew(ctx context.Context, k *leaseKeeper, now time.Time) (bool, error) {
	until := now.Add(s.cfg.LeaseTTL)
	epoch := k.epoch
	return s.st.UpdateRun(ctx, k.name, store.RunCond{JobID: k.jobID, HeldBy: s.cfg.WorkerID, Epoch: &epoch},
		store.RunUpdate{LeaseUntil: &until})
}

// fence confirms that k's job still holds the run, just before a commit
// (a checkpoint or the final model renamed into place, the model
// registered): it renews the lease under its token. When the store does
// not answer, the lease as last confirmed decides; once that has run out,
// fence waits for the store (at most StoreWait), since meanwhile another
// worker may have taken the run over.
func (s *Service) fence(k *leaseKeeper) error {
	deadline := s.clock().Add(s.cfg.StoreWait)
	wait := s.cfg.RetryEvery
	for {
		if k.isLost() {
			return errLeaseLost
		}
		now := s.clock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ok, err := s.renew(ctx, k, now)
		cancel()
		switch {
		case errors.Is(err, store.ErrNotFound):
			k.cancel(errStopRequested)
			return fmt.Errorf("run %s was deleted", k.name)
		case err == nil && ok:
			k.renewed(now)
			return nil
		case err == nil:
			k.lose()
			return errLeaseLost
		case k.heldAt(s.clock()):
			return nil // the store is away, but nobody can have taken the run yet
		case s.clock().After(deadline):
			return fmt.Errorf("cannot confirm the lease on run %s (its lease ran out while the store did not answer): %w", k.name, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 16*s.cfg.RetryEvery)
	}
}

// tendLease polls the run once and renews its lease when a third of it has
// passed. It reports whether the lease is still this job's to keep.
func (s *Service) tendLease(ctx context.Context, k *leaseKeeper, lastRenew *time.Time) bool {
	run, err := s.st.GetRun(ctx, k.name)
	if errors.Is(err, store.ErrNotFound) {
		k.cancel(errStopRequested)
		return false
	}
	if err != nil {
		s.log.Warn("poll run", "run", k.name, "err", err)
		return true
	}
	if run.JobID != k.jobID || run.LeaseOwner != s.cfg.WorkerID || run.LeaseEpoch != k.epoch {
		k.lose()
		return false
	}
	if run.Status == store.StatusStopping {
		k.cancel(errStopRequested) // the trainer saves a stop checkpoint meanwhile
	}
	now := s.clock()
	if now.Sub(*lastRenew) < s.cfg.LeaseTTL/3 {
		return true
	}
	ok, err := s.renew(ctx, k, now)
	switch {
	case err != nil:
		s.log.Warn("renew lease", "run", k.name, "err", err)
	case !ok:
		k.lose()
		return false
	default:
		*lastRenew = now
		k.renewed(now)
	}
	return true
}

// reapLoop re-queues runs whose worker stopped renewing its lease (it was
// killed), at start-up and then every half lease period.
func (s *Service) reapLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.LeaseTTL / 2)
	defer t.Stop()
	for {
		if err := s.reap(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reap", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Service) reap(ctx context.Context) error {
	orphans, err := s.orphans(ctx)
	if err != nil {
		return err
	}
	for _, r := range orphans {
		if err := s.requeue(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// orphans lists the active runs whose lease expired or whose worker is a
// dead process of this PID namespace.
func (s *Service) orphans(ctx context.Context) ([]store.Run, error) {
	active := []store.RunStatus{store.StatusStarting, store.StatusRunning, store.StatusStopping}
	var out []store.Run
	tok := ""
	for {
		page, next, err := s.st.ListRuns(ctx, store.RunFilter{Statuses: active, Limit: 500, PageToken: tok})
		if err != nil {
			return nil, err
		}
		now := s.clock()
		for _, r := range page {
			if r.LeaseOwner != "" && (r.LeaseUntil.Before(now) || s.deadLocalWorker(r.LeaseOwner)) {
				out = append(out, r)
			}
		}
		if next == "" {
			return out, nil
		}
		tok = next
	}
}

// requeue gives orphan r (as read) a new job, or stops it if it was
// stopping. The update compares and sets the lease as read: a worker that
// renewed meanwhile keeps its run.
func (s *Service) requeue(ctx context.Context, r store.Run) error {
	asRead := store.RunCond{JobID: r.JobID, HeldBy: r.LeaseOwner, HeldUntil: r.LeaseUntil}
	if r.Status == store.StatusStopping {
		s.finishIf(ctx, r.Name, asRead, store.StatusStopped, "",
			fmt.Sprintf("worker %s stopped responding while stopping; its last checkpoint is kept", r.LeaseOwner))
		return nil
	}
	rank, note := s.rankNote(ctx, r)
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		id, err := s.q.insertTx(ctx, tx, TrainArgs{Run: r.Name})
		if err != nil {
			return err
		}
		cond := asRead
		cond.Statuses = []store.RunStatus{store.StatusStarting, store.StatusRunning}
		queued, empty, zero := store.StatusQueued, "", time.Time{}
		ok, err := tx.UpdateRun(ctx, r.Name, cond, store.RunUpdate{Status: &queued, JobID: &id, LeaseOwner: &empty, LeaseUntil: &zero})
		if err != nil {
			return err
		}
		if !ok {
			return errNotOrphan // rolls the new job back
		}
		return tx.AddEvent(ctx, r.Name, store.Event{Time: s.clock(), Type: string(store.StatusQueued),
			Message: fmt.Sprintf("worker %s%s stopped responding (lease expired %s); re-queued to resume from the last checkpoint",
				r.LeaseOwner, note, r.LeaseUntil.Format(time.RFC3339))})
	})
	switch {
	case errors.Is(err, errNotOrphan):
		return nil
	case err != nil:
		return fmt.Errorf("re-queue %s: %w", r.Name, err)
	}
	s.log.Warn("re-queued run of a dead worker", "run", r.Name, "worker", r.LeaseOwner)
	if rank != nil {
		s.leave(ctx, *rank, "was lost: its lease expired")
	}
	return nil
}

var errNotOrphan = errors.New("run is no longer orphaned")

// workerID is "host-pid-random-tag": the tag names the PID namespace (see
// namespaceTag), so only a process that shares it judges the pid.
func workerID(tag string) string {
	host, _ := os.Hostname()
	var b [3]byte
	rand.Read(b[:])
	id := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	if tag != "" {
		id += "-" + tag
	}
	return id
}

// namespaceTag identifies this boot and PID namespace: two processes with
// the same tag see the same pids. Containers sharing a hostname (or a
// restarted machine) get different tags. "" when unknown.
func namespaceTag() string {
	boot, err1 := os.ReadFile("/proc/sys/kernel/random/boot_id")
	ns, err2 := os.Readlink("/proc/self/ns/pid")
	if err1 != nil || err2 != nil {
		return ""
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(string(boot)) + "|" + ns))
	return hex.EncodeToString(h[:4])
}

// deadLocalWorker reports whether owner (a worker id from workerID) is a
// process of this host and PID namespace that no longer exists, such as
// the previous `hone serve` killed before a restart: its runs need not wait
// for the lease to expire. Any doubt (another namespace, an id of another
// form) leaves the run to the lease.
func (s *Service) deadLocalWorker(owner string) bool {
	host, err := os.Hostname()
	if err != nil || s.nsTag == "" || owner == s.cfg.WorkerID || !strings.HasPrefix(owner, host+"-") {
		return false
	}
	parts := strings.Split(strings.TrimPrefix(owner, host+"-"), "-")
	if len(parts) != 3 || parts[2] != s.nsTag {
		return false
	}
	pid, err := strconv.Atoi(parts[0])
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}
