package runs

// Gang-scheduled runs: a run with nodes N > 1 is trained by N workers, one
// rank each, through train.RunDistributed over Gloo.
//
// The worker whose river job claims the run (the lease holder, as for any
// run) is rank 0. It starts the rendezvous store on its collective
// address, records the store's address and a fresh secret as the run's
// rendezvous (hone_run_gangs, under the claim's lease epoch) and waits, up
// to the rendezvous timeout, for N-1 other workers. Every working process
// polls the open rendezvous (gangLoop) and, when it has a free slot, joins
// the oldest (by the run's creation) as the next free rank (hone_run_ranks;
// a worker holds at most one rank of a claim). The store admits a rank
// only with the secret and from the host its rank record names.
//
// Runs competing for the same workers (two 2-node runs on two workers,
// each leading one) would each hold some and wait in vain. Instead a
// rendezvous short of ranks yields to an older open one that needs its
// workers (store.YieldGang, serialized with joins on the rendezvous row):
// it closes, its ranks leave at once, its run goes back to the queue, and
// its workers join the older one. A worker about to claim a multi-node run
// joins an older open rendezvous instead. The oldest never yields, so it
// completes when enough workers are alive.
//
// A rank that leaves (its process died, its network went away) breaks the
// collective; the others leave it within the collective timeout. Rank 0
// then names the ranks whose heartbeat stopped, records why, and puts the
// run back in the queue (QUEUED): the next claim resumes from the last
// checkpoint once N workers are free again. If rank 0 itself is lost, its
// lease expires and the reaper re-queues the run the same way.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/riverqueue/river"

	"hone/client"
	"hone/collective"
	"hone/collective/gloo"
	"hone/settings"
	"hone/store"
	"hone/train"
)

// GangConfig configures how a worker takes part in multi-node runs.
type GangConfig struct {
	// CollectiveAddr is where this worker's ranks listen: HOST, HOST:PORT
	// or a network interface's name (its first address). The Gloo
	// transport binds to HOST (a port the system picks); when the worker
	// is a run's rank 0, its rendezvous store listens on HOST:PORT (0 or
	// none: one the system picks). Default 127.0.0.1 (loopback: every
	// rank on this machine).
	CollectiveAddr string
	// CollectiveTimeout bounds each collective call: a rank that dies
	// costs the others at most this. Default collective.DefaultTimeout.
	CollectiveTimeout time.Duration
	// RendezvousTimeout bounds how long rank 0 waits for the other ranks
	// to join and connect; then the run goes back to the queue. Default
	// 5 minutes.
	RendezvousTimeout time.Duration
	// WorkersWindow: a run may ask for as many nodes as there are workers
	// that worked the queue within this window. Default 24 hours.
	WorkersWindow time.Duration

	host string // CollectiveAddr resolved
	port int
}

func (g *GangConfig) fill() error {
	if g.CollectiveTimeout <= 0 {
		g.CollectiveTimeout = collective.DefaultTimeout
	}
	if g.RendezvousTimeout <= 0 {
		g.RendezvousTimeout = 5 * time.Minute
	}
	if g.WorkersWindow <= 0 {
		g.WorkersWindow = 24 * time.Hour
	}
	host, port, err := ResolveCollectiveAddr(g.CollectiveAddr)
	if err != nil {
		return err
	}
	g.host, g.port = host, port
	return nil
}

// ResolveCollectiveAddr turns a --collective-addr value (HOST, HOST:PORT
// or an interface name) into the host to bind and the store's port.
func ResolveCollectiveAddr(a string) (string, int, error) {
	if a == "" {
		return "127.0.0.1", 0, nil
	}
	if h, p, err := net.SplitHostPort(a); err == nil {
		port, err := strconv.Atoi(p)
		if err != nil || port < 0 || port > 65535 {
			return "", 0, fmt.Errorf("collective address %q: port %q is not a number in [0, 65535]", a, p)
		}
		if h == "" {
			return "", 0, fmt.Errorf("collective address %q: name the host or IP address to listen on (an unspecified address would listen on every network)", a)
		}
		return h, port, nil
	}
	if ifi, err := net.InterfaceByName(a); err == nil {
		addrs, err := ifi.Addrs()
		if err != nil {
			return "", 0, fmt.Errorf("collective address %q: read the interface's addresses: %w", a, err)
		}
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok && ipn.IP.To4() != nil {
				return ipn.IP.String(), 0, nil
			}
		}
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
				return ipn.IP.String(), 0, nil
			}
		}
		return "", 0, fmt.Errorf("collective address %q: the interface has no usable address", a)
	}
	if ip := net.ParseIP(a); ip != nil && ip.IsUnspecified() {
		return "", 0, fmt.Errorf("collective address %q: name one address to listen on, not every network", a)
	}
	return a, 0, nil
}

// distTrainer is a Trainer that can run one rank of a data-parallel run.
type distTrainer interface {
	RunDistributed(ctx context.Context, spec train.Spec, workDir string, obs train.Observer, coll collective.Collective, opt train.DistOptions) (*train.Result, error)
}

func (trainPackage) RunDistributed(ctx context.Context, spec train.Spec, workDir string, obs train.Observer, coll collective.Collective, opt train.DistOptions) (*train.Result, error) {
	return train.RunDistributed(ctx, spec, workDir, obs, coll, opt)
}

// checkSharding checks the request's sharding against its nodes.
func checkSharding(req *client.CreateRunRequest) error {
	if err := settings.CheckSharding(req.Sharding, req.Nodes); err != nil {
		return invalidf("%v", err)
	}
	return nil
}

// distOptions are the train options of the request's sharding.
func distOptions(req *client.CreateRunRequest) train.DistOptions {
	return train.DistOptions{ShardOptimizer: req.Sharding == "optimizer", ShardParameters: req.Sharding == "parameters"}
}

// planned is the run's spec as one rank plans its memory: with sharded
// parameters, a rank holds 1/nodes of the state (with a sharded
// optimizer, of the optimizer state), so the data check (and its choice of
// context length) admits what fits on the ranks together; a refusal says
// how many more nodes would fit.
func (p *params) planned() train.Spec {
	s := p.Spec.OnNodes(p.Request.Nodes)
	switch {
	case p.Request.Nodes <= 1:
	case p.Request.Sharding == "parameters":
		return s.ShardedOver(p.Request.Nodes)
	case p.Request.Sharding == "optimizer": // a rank holds 1/nodes of the optimizer state
		return s.OptimizerShardedOver(p.Request.Nodes)
	}
	return s
}

// shardingNote says what each rank of the run holds, for its events.
func shardingNote(req *client.CreateRunRequest) string {
	switch req.Sharding {
	case "optimizer":
		return "sharding optimizer: each rank holds 1/" + strconv.Itoa(req.Nodes) + " of the optimizer state"
	case "parameters":
		return "sharding parameters: each rank holds 1/" + strconv.Itoa(req.Nodes) + " of the parameters, gradients and optimizer state"
	}
	return "sharding none: each rank holds the whole model and optimizer state"
}

// slots bounds what this process trains at once: runs it leads (river
// jobs) and ranks it holds in others' runs share Config.Concurrency.
func (s *Service) takeSlot() bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *Service) freeSlot() { <-s.slots }

// checkNodes refuses a run that asks for more nodes than the queue can
// ever provide: the workers that worked it within WorkersWindow.
func (s *Service) checkNodes(ctx context.Context, req *client.CreateRunRequest) error {
	if err := settings.CheckNodes(req.Nodes); err != nil {
		return invalidf("%v", err)
	}
	if req.Nodes <= 1 {
		return nil
	}
	n, err := s.st.CountWorkers(ctx, s.clock().Add(-s.cfg.Gang.WorkersWindow))
	if err != nil {
		return err
	}
	if req.Nodes > n {
		return invalidf("nodes: %d workers are needed (one rank each) but only %d worked this queue in the last %s; "+
			"start more `hone worker --db postgres://... --collective-addr HOST` processes sharing the queue, or ask for at most %d",
			req.Nodes, n, s.cfg.Gang.WorkersWindow, max(n, 1))
	}
	return nil
}

// gangLoop reports this worker alive and joins open rendezvous as a rank
// while it has a free slot.
func (s *Service) gangLoop(ctx context.Context) {
	started := s.clock()
	see := func() {
		if err := s.st.SeeWorker(ctx, store.Worker{ID: s.cfg.WorkerID, Host: s.cfg.Gang.host, StartedAt: started, SeenAt: s.clock(),
			Slots: s.cfg.Concurrency}); err != nil && ctx.Err() == nil {
			s.log.Warn("record this worker", "err", err)
		}
	}
	see()
	lastSeen := time.Now()
	t := time.NewTicker(s.cfg.FetchPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(lastSeen) >= s.cfg.LeaseTTL/2 {
			see()
			lastSeen = time.Now()
		}
		if !s.takeSlot() {
			continue
		}
		if !s.joinOpenGang(ctx) {
			s.freeSlot()
		}
	}
}

// waitRanks waits for the ranks this worker holds in others' runs to stop
// (they stop with the whole group, at a step boundary), at most until ctx
// ends.
func (s *Service) waitRanks(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.gangs.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("runs: ranks of multi-node runs still stopping: %w", ctx.Err())
	}
}

// joinOpenGang takes the first free rank of the oldest open rendezvous
// this worker is not part of yet (of a run created before the run named
// before, if given) and works it with the slot the caller took, which the
// rank frees when it leaves. It reports whether it joined one; if not, the
// slot is still the caller's.
func (s *Service) joinOpenGang(ctx context.Context, before ...string) bool {
	gs, err := s.st.OpenGangs(ctx, before...)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("look for runs to join", "err", err)
		}
		return false
	}
	for _, g := range gs {
		for r := 1; r < g.Size; r++ {
			k := store.Rank{Run: g.Run, Epoch: g.Epoch, Rank: r, Worker: s.cfg.WorkerID, Host: s.cfg.Gang.host, JoinedAt: s.clock()}
			ok, err := s.st.JoinRank(ctx, k)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("join a multi-node run", "run", g.Run, "err", err)
				}
				return false
			}
			if ok {
				s.gangs.Add(1)
				go func() {
					defer s.gangs.Done()
					defer s.freeSlot()
					s.follow(s.workCtx, g, k)
				}()
				return true
			}
		}
	}
	return false
}

// joinOlderGang is a worker's choice before and after it works a job of
// the multi-node run name: with a slot free, it joins an older run's open
// rendezvous rather than open one of its own (which would compete for the
// same workers) and reports whether it did (the rank holds the slot then).
func (s *Service) joinOlderGang(ctx context.Context, name string) bool {
	run, err := s.st.GetRun(ctx, name)
	if err != nil || run.Status != store.StatusQueued {
		return false
	}
	if p, err := decodeParams(run); err != nil || p.Request.Nodes <= 1 {
		return false
	}
	return s.joinOpenGang(ctx, name)
}

// heartbeat records every PollEvery that rank k is alive, until stop.
func (s *Service) heartbeat(ctx context.Context, k store.Rank) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.cfg.PollEvery)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := s.st.TouchRank(ctx, k.Run, k.Epoch, k.Rank, s.clock()); err != nil && ctx.Err() == nil {
				s.log.Warn("rank heartbeat", "run", k.Run, "rank", k.Rank, "err", err)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(quit) }); <-done }
}

func (s *Service) leave(ctx context.Context, k store.Rank, note string) {
	if err := s.st.LeaveRank(ctx, k.Run, k.Epoch, k.Rank, s.clock(), note); err != nil {
		s.log.Warn("record leaving", "run", k.Run, "rank", k.Rank, "err", err)
	}
	s.event(ctx, k.Run, "RANK_LEFT", "rank %d (worker %s on %s) left: %s", k.Rank, k.Worker, k.Host, note)
}

// follow works rank k of another worker's run until the run ends or the
// group breaks.
func (s *Service) follow(ctx context.Context, g store.Gang, k store.Rank) {
	bg := context.WithoutCancel(ctx)
	s.event(bg, k.Run, "RANK_JOINED", "worker %s joined as rank %d of %d (host %s)", k.Worker, k.Rank, g.Size, k.Host)
	stopBeat := s.heartbeat(bg, k)
	defer stopBeat()
	note, err := s.followRun(ctx, g, k)
	if err != nil {
		note = err.Error()
	}
	s.leave(bg, k, note)
}

func (s *Service) followRun(ctx context.Context, g store.Gang, k store.Rank) (string, error) {
	run, err := s.st.GetRun(ctx, g.Run)
	if err != nil {
		return "", fmt.Errorf("read the run: %w", err)
	}
	p, err := decodeParams(run)
	if err != nil {
		return "", err
	}
	if err := s.confineParams(p); err != nil {
		return "", fmt.Errorf("inputs changed since the run was created: %w", err)
	}
	dt, ok := s.tr.(distTrainer)
	if !ok {
		return "", errors.New("this worker's trainer cannot run one rank of a multi-node run")
	}
	workDir := filepath.Join(s.runDir(g.Run), "rank"+strconv.Itoa(k.Rank))
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return "", fmt.Errorf("create the rank's work directory: %w", err)
	}
	// Rank 0 closes the rendezvous when it gives up or yields: then stop
	// waiting for it, to be free for another run at once.
	closed := func(ctx context.Context) bool {
		open, err := s.st.GangOpen(ctx, g.Run, g.Epoch)
		return err == nil && !open
	}
	coll, stopped, err := s.connectUnless(ctx, g, k.Rank, closed)
	if stopped || err != nil && closed(ctx) {
		why := "rank 0 closed the rendezvous before it completed"
		ranks, _ := s.st.ListRanks(ctx, g.Run)
		for _, r := range ranks {
			if r.Epoch == k.Epoch && r.Rank == k.Rank && !r.LeftAt.IsZero() {
				why = r.Note
			}
		}
		return why, nil
	}
	if err != nil {
		// The store's address stays in the rendezvous record.
		return "", fmt.Errorf("the rendezvous did not complete: %s", strings.ReplaceAll(err.Error(), g.StoreAddr, "rank 0's store"))
	}
	defer coll.Close()
	if _, err := dt.RunDistributed(ctx, p.Spec, workDir, nopObserver{}, coll, distOptions(&p.Request)); err != nil {
		return "", fmt.Errorf("training stopped: %w", err)
	}
	return "the run finished", nil
}

// connect joins the Gloo group of gang g as rank, within the rendezvous
// timeout; later calls are bounded by the collective timeout.
func (s *Service) connect(ctx context.Context, g store.Gang, rank int) (collective.Collective, error) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Gang.RendezvousTimeout)
	defer cancel()
	return gloo.New(rctx, collective.Config{Rank: rank, Size: g.Size, StoreAddr: g.StoreAddr, Secret: g.Secret,
		ListenHost: s.cfg.Gang.host, Timeout: s.cfg.Gang.CollectiveTimeout, Prefix: fmt.Sprintf("%s/%d", g.Run, g.Epoch)})
}

// connectUnless is connect, given up when stop (called every FetchPoll
// while the rendezvous lasts) says so: it reports whether it did, and
// then returns no collective.
func (s *Service) connectUnless(ctx context.Context, g store.Gang, rank int, stop func(context.Context) bool) (collective.Collective, bool, error) {
	wctx, cancel := context.WithCancel(ctx)
	stopped, done := false, make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.cfg.FetchPoll)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			// Not under wctx: a decision taken is seen through.
			if stop(context.WithoutCancel(wctx)) {
				stopped = true
				cancel()
				return
			}
		}
	}()
	coll, err := s.connect(wctx, g, rank)
	cancel()
	<-done
	if err != nil {
		return nil, stopped, err
	}
	if stopped {
		coll.Close()
		return nil, true, nil
	}
	return coll, false, nil
}

// errRequeue is a multi-node run's failure that is not the run's fault:
// a rank was lost or never came; the run goes back to the queue.
type errRequeue struct{ msg string }

func (e *errRequeue) Error() string { return e.msg }

// lead runs rank 0 of a multi-node run: it opens the rendezvous, waits
// for the other ranks, trains, and on a lost rank returns an *errRequeue
// naming it.
func (s *Service) lead(ctx context.Context, run *store.Run, p *params, workDir string, obs *observer, tr *tracker) (*train.Result, error) {
	nodes := p.Request.Nodes
	dt, ok := s.tr.(distTrainer)
	if !ok {
		return nil, errors.New("this worker's trainer cannot run a multi-node run")
	}
	bg := context.WithoutCancel(ctx)
	me := store.Rank{Run: run.Name, Epoch: run.LeaseEpoch, Rank: 0, Worker: s.cfg.WorkerID, Host: s.cfg.Gang.host, JoinedAt: s.clock()}
	if ok, err := s.st.JoinRank(ctx, me); err != nil || !ok {
		return nil, &errRequeue{fmt.Sprintf("could not record rank 0 (%v)", err)}
	}
	secret := collective.NewSecret()
	srv, err := collective.ServeStoreAdmit(net.JoinHostPort(s.cfg.Gang.host, strconv.Itoa(s.cfg.Gang.port)), secret, nodes, s.log,
		s.admitRank(run.Name, run.LeaseEpoch))
	if err != nil {
		s.leave(bg, me, err.Error())
		return nil, fmt.Errorf("start the rendezvous store: %w", err)
	}
	defer srv.Close()
	g := store.Gang{Run: run.Name, Epoch: run.LeaseEpoch, Size: nodes, StoreAddr: srv.Addr(), Secret: secret, CreatedAt: s.clock()}
	if err := s.st.OpenGang(ctx, g); err != nil {
		s.leave(bg, me, err.Error())
		return nil, &errRequeue{fmt.Sprintf("could not open the rendezvous: %v", err)}
	}
	defer func() {
		if err := s.st.CloseGang(bg, run.Name, run.LeaseEpoch); err != nil {
			s.log.Warn("close the rendezvous", "run", run.Name, "err", err)
		}
	}()
	tr.event(string(store.StatusStarting), "worker %s is rank 0 of %d (host %s); waiting up to %s for %d more workers to join",
		s.cfg.WorkerID, nodes, me.Host, s.cfg.Gang.RendezvousTimeout, nodes-1)
	stopBeat := s.heartbeat(bg, me)
	defer stopBeat()
	// While it waits, an older run's rendezvous may need this one's
	// workers: then it closes its own and the run goes back to the queue.
	var olderRun string
	coll, yielded, err := s.connectUnless(ctx, g, 0, func(ctx context.Context) bool {
		now := s.clock()
		to, err := s.st.YieldGang(ctx, run.Name, run.LeaseEpoch, now, now.Add(-s.cfg.LeaseTTL))
		if err != nil {
			s.log.Warn("decide whether to yield to an older multi-node run", "run", run.Name, "err", err)
		}
		olderRun = to
		return to != ""
	})
	if yielded {
		why := store.YieldNote(olderRun)
		s.leave(bg, me, why)
		return nil, &errRequeue{why + "; re-queued (nothing was lost: the run resumes from its last checkpoint when " +
			strconv.Itoa(nodes) + " workers are free)"}
	}
	if err != nil {
		ranks, _ := s.st.ListRanks(bg, run.Name)
		joined := map[int]store.Rank{}
		for _, k := range ranks {
			if k.Epoch == run.LeaseEpoch {
				joined[k.Rank] = k
			}
		}
		var never, stuck []string
		for r := 1; r < nodes; r++ {
			if k, ok := joined[r]; ok {
				stuck = append(stuck, fmt.Sprintf("rank %d (worker %s on %s)", r, k.Worker, k.Host))
			} else {
				never = append(never, strconv.Itoa(r))
			}
		}
		why := "the rendezvous did not complete within " + s.cfg.Gang.RendezvousTimeout.String()
		if len(never) > 0 {
			why += "; no worker joined as rank " + strings.Join(never, ", ")
		}
		if len(stuck) > 0 {
			why += "; joined but did not connect: " + strings.Join(stuck, ", ")
		}
		s.leave(bg, me, why)
		return nil, &errRequeue{why + "; re-queued (nothing was lost: the run resumes from its last checkpoint when " +
			strconv.Itoa(nodes) + " workers are free)"}
	}
	watched := &watchedColl{Collective: coll}
	defer coll.Close()
	tr.event(string(store.StatusStarting), "all %d ranks connected; training (%s)", nodes, shardingNote(&p.Request))
	res, trainErr := dt.RunDistributed(ctx, p.Spec, workDir, obs, watched, distOptions(&p.Request))
	if trainErr == nil {
		s.leave(bg, me, "the run finished")
		return res, nil
	}
	if ctx.Err() != nil || (!watched.failed() && !errors.Is(trainErr, train.ErrPeerStopped)) {
		s.leave(bg, me, trainErr.Error())
		return nil, trainErr
	}
	why := s.lostRanks(bg, run.Name, run.LeaseEpoch, nodes)
	s.leave(bg, me, "the group broke: "+why)
	return nil, &errRequeue{fmt.Sprintf("%s at step %s; the other ranks left their collective (%v); re-queued to resume from the last checkpoint when %d workers are free",
		why, obs.progress(), trainErr, nodes)}
}

// lostRanks waits (up to twice the lease) for the other ranks of a broken
// group to record leaving, and names those whose heartbeat stopped instead
// (killed, or cut off) and those that left with a reason.
func (s *Service) lostRanks(ctx context.Context, run string, epoch int64, nodes int) string {
	stale := max(s.cfg.LeaseTTL, 3*s.cfg.PollEvery)
	deadline := time.Now().Add(2*stale + s.cfg.PollEvery)
	for {
		ranks, err := s.st.ListRanks(ctx, run)
		if err != nil {
			return fmt.Sprintf("a rank was lost (its records cannot be read: %v)", err)
		}
		now := s.clock()
		var lost, left, pending []string
		for _, k := range ranks {
			if k.Epoch != epoch || k.Rank == 0 {
				continue
			}
			who := fmt.Sprintf("rank %d (worker %s on host %s)", k.Rank, k.Worker, k.Host)
			switch {
			case !k.LeftAt.IsZero():
				left = append(left, who+" left: "+k.Note)
			case now.Sub(k.SeenAt) > stale:
				note := "was lost: no heartbeat since " + k.SeenAt.Format(time.RFC3339)
				lost = append(lost, who+" "+note)
				s.leave(ctx, k, note)
			default:
				pending = append(pending, who)
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			for _, w := range pending {
				lost = append(lost, w+" did not say why it stopped")
			}
			if len(lost)+len(left) == 0 {
				return "a rank was lost"
			}
			return strings.Join(slices.Concat(lost, left), "; ")
		}
		time.Sleep(s.cfg.PollEvery)
	}
}

// admitRank lets rank r into the store only from the host its rank record
// (of this claim) names.
func (s *Service) admitRank(run string, epoch int64) func(int, net.Addr) error {
	return func(rank int, remote net.Addr) error {
		ip, _, err := net.SplitHostPort(remote.String())
		if err != nil {
			return err
		}
		ranks, err := s.st.ListRanks(context.Background(), run)
		if err != nil {
			return fmt.Errorf("rank %d: the rendezvous record cannot be read: %w", rank, err)
		}
		for _, k := range ranks {
			if k.Epoch != epoch || k.Rank != rank || !k.LeftAt.IsZero() {
				continue
			}
			if sameHost(k.Host, ip) {
				return nil
			}
			return fmt.Errorf("rank %d is recorded on host %s, not %s", rank, k.Host, ip)
		}
		return fmt.Errorf("rank %d has not joined the run", rank)
	}
}

// sameHost reports whether host (a name or an IP) resolves to ip.
func sameHost(host, ip string) bool {
	want := net.ParseIP(ip)
	if h := net.ParseIP(host); h != nil {
		return h.Equal(want)
	}
	addrs, err := net.LookupHost(host)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if net.ParseIP(a).Equal(want) {
			return true
		}
	}
	return false
}

// requeueGang puts the run back in the queue after its group broke or
// never formed; the claim's epoch fences it.
func (s *Service) requeueGang(ctx context.Context, name string, jobID, epoch int64, msg string) error {
	queued, empty, zero := store.StatusQueued, "", time.Time{}
	ok, err := s.transition(ctx, name, store.RunCond{JobID: jobID, Epoch: &epoch,
		Statuses: []store.RunStatus{store.StatusStarting, store.StatusRunning}},
		store.RunUpdate{Status: &queued, LeaseOwner: &empty, LeaseUntil: &zero}, string(store.StatusQueued), msg)
	if err != nil || !ok {
		s.log.Warn("re-queue a multi-node run", "run", name, "updated", ok, "err", err)
	}
	// Try again soon: the workers may be free then.
	return river.JobSnooze(max(s.cfg.FetchPoll, time.Second))
}

// rankNote names the rank (nil: none) and host of a multi-node run's lease
// holder, for the reaper's event when that worker is lost.
func (s *Service) rankNote(ctx context.Context, r store.Run) (*store.Rank, string) {
	ranks, err := s.st.ListRanks(ctx, r.Name)
	if err != nil {
		return nil, ""
	}
	for _, k := range ranks {
		if k.Epoch == r.LeaseEpoch && k.Worker == r.LeaseOwner && k.LeftAt.IsZero() {
			return &k, fmt.Sprintf(" (rank %d of the run, host %s)", k.Rank, k.Host)
		}
	}
	return nil, ""
}

// rankViews shows the ranks of every claim of a run.
func rankViews(ks []store.Rank) []client.RunRank {
	out := make([]client.RunRank, 0, len(ks))
	for _, k := range ks {
		v := client.RunRank{Attempt: k.Epoch, Rank: k.Rank, Worker: k.Worker, Host: k.Host, JoinedAt: k.JoinedAt, Note: k.Note}
		if !k.LeftAt.IsZero() {
			t := k.LeftAt
			v.LeftAt = &t
		}
		out = append(out, v)
	}
	return out
}

// watchedColl remembers whether a collective call failed: then the run's
// error is the group's (a lost rank), not the training's.
type watchedColl struct {
	collective.Collective
	mu  sync.Mutex
	bad bool
}

func (w *watchedColl) note(err error) error {
	if err != nil {
		w.mu.Lock()
		w.bad = true
		w.mu.Unlock()
	}
	return err
}

func (w *watchedColl) failed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bad
}

func (w *watchedColl) AllReduce(ctx context.Context, buf []float32) error {
	return w.note(w.Collective.AllReduce(ctx, buf))
}

func (w *watchedColl) ReduceScatter(ctx context.Context, buf []float32, counts []int) error {
	return w.note(w.Collective.ReduceScatter(ctx, buf, counts))
}

func (w *watchedColl) AllGather(ctx context.Context, out, in []float32) error {
	return w.note(w.Collective.AllGather(ctx, out, in))
}

func (w *watchedColl) Broadcast(ctx context.Context, buf []float32, root int) error {
	return w.note(w.Collective.Broadcast(ctx, buf, root))
}

func (w *watchedColl) Barrier(ctx context.Context) error { return w.note(w.Collective.Barrier(ctx)) }

// nopObserver is what ranks other than 0 report to: rank 0 records the run.
type nopObserver struct{}

func (nopObserver) OnStep(train.StepMetrics)                  {}
func (nopObserver) OnEval(train.EvalMetrics)                  {}
func (nopObserver) OnCheckpoint(train.Checkpoint)             {}
func (nopObserver) OnPromptOutputs(int, []train.PromptOutput) {}
func (nopObserver) OnLog(string)                              {}
