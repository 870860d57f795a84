package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"hone/store"
	"hone/store/storetest"
)

// TestGang: workers are counted within a window; a rendezvous is open
// while its run is STARTING under the same claim and short of ranks; a
// worker holds one rank of a claim and a rank one worker; leaving is
// recorded once; on both backends.
func TestGang(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store, _ string) {
		ctx := context.Background()
		for i, id := range []string{"w1", "w2", "w3"} {
			seen := t0.Add(time.Duration(i) * time.Hour)
			if err := s.SeeWorker(ctx, store.Worker{ID: id, Host: "10.0.0.1", StartedAt: t0, SeenAt: seen}); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.CountWorkers(ctx, t0.Add(90*time.Minute)); err != nil || n != 1 {
			t.Fatalf("CountWorkers = %d, %v; want 1", n, err)
		}
		if err := s.SeeWorker(ctx, store.Worker{ID: "w1", Host: "10.0.0.1", StartedAt: t0, SeenAt: t0.Add(3 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.CountWorkers(ctx, t0.Add(90*time.Minute)); n != 2 {
			t.Fatalf("CountWorkers after w1 was seen again = %d, want 2", n)
		}

		r := &store.Run{Name: "g1", User: "ann", ExperimentPath: "/x", Status: store.StatusStarting, Params: `{}`,
			RegisterTo: "main.demo", JobID: 1, LeaseEpoch: 4, CreatedAt: t0}
		if err := s.InsertRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		g := store.Gang{Run: "g1", Epoch: 4, Size: 2, StoreAddr: "10.0.0.1:4000", Secret: "s3cret-0123456789", CreatedAt: t0}
		if err := s.OpenGang(ctx, g); err != nil {
			t.Fatal(err)
		}
		open := func(want int) {
			t.Helper()
			gs, err := s.OpenGangs(ctx)
			if err != nil || len(gs) != want {
				t.Fatalf("OpenGangs = %+v, %v; want %d", gs, err, want)
			}
			if want == 1 && gs[0] != g {
				t.Fatalf("OpenGangs = %+v, want %+v", gs[0], g)
			}
		}
		open(1)
		join := func(rank int, worker string, want bool) {
			t.Helper()
			ok, err := s.JoinRank(ctx, store.Rank{Run: "g1", Epoch: 4, Rank: rank, Worker: worker, Host: "10.0.0.1", JoinedAt: t0})
			if err != nil || ok != want {
				t.Fatalf("JoinRank(%d, %s) = %v, %v; want %v", rank, worker, ok, err, want)
			}
		}
		join(0, "w1", true)
		join(1, "w1", false) // a worker is one rank
		join(0, "w2", false) // a rank is one worker
		open(1)
		join(1, "w2", true)
		open(0) // full
		if err := s.LeaveRank(ctx, "g1", 4, 1, t0.Add(time.Minute), "first"); err != nil {
			t.Fatal(err)
		}
		if err := s.LeaveRank(ctx, "g1", 4, 1, t0.Add(2*time.Minute), "second"); err != nil {
			t.Fatal(err)
		}
		if err := s.TouchRank(ctx, "g1", 4, 0, t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		ks, err := s.ListRanks(ctx, "g1")
		if err != nil || len(ks) != 2 {
			t.Fatalf("ListRanks = %+v, %v", ks, err)
		}
		if !ks[1].LeftAt.Equal(t0.Add(time.Minute)) || ks[1].Note != "first" || !ks[0].LeftAt.IsZero() || !ks[0].SeenAt.Equal(t0.Add(time.Minute)) {
			t.Fatalf("ranks after leaving and a heartbeat: %+v", ks)
		}
		// A new claim (epoch) of the run closes the old rendezvous to joiners.
		g.Epoch = 5
		if err := s.OpenGang(ctx, g); err != nil {
			t.Fatal(err)
		}
		open(0) // the run is still at epoch 4
		if err := s.CloseGang(ctx, "g1", 5); err != nil {
			t.Fatal(err)
		}
		if gs, _ := s.OpenGangs(ctx); len(gs) != 0 {
			t.Fatalf("OpenGangs after close = %+v", gs)
		}
	})
}

// TestGangYield: a younger run's rendezvous that is short of ranks yields
// to the oldest open one that needs its workers (closing it to joiners and
// recording its ranks as left), and only then: never the oldest, never a
// complete one, never to a rendezvous whose rank 0 lost its lease, that
// needs more workers than are alive, or that its workers are all part of
// already; on both backends.
func TestGangYield(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store, _ string) {
		ctx := context.Background()
		now, live := t0.Add(time.Minute), t0
		for _, id := range []string{"w1", "w2", "w3"} {
			if err := s.SeeWorker(ctx, store.Worker{ID: id, Host: "10.0.0.1", StartedAt: t0, SeenAt: t0}); err != nil {
				t.Fatal(err)
			}
		}
		// gang opens run name (created at created) of size, with its ranks
		// held by workers, in that order.
		gang := func(name string, created time.Time, size int, workers ...string) {
			t.Helper()
			r := &store.Run{Name: name, User: "ann", ExperimentPath: "/x", Status: store.StatusStarting, Params: `{}`,
				RegisterTo: "main.demo", JobID: 1, LeaseOwner: workers[0], LeaseUntil: now.Add(time.Minute), LeaseEpoch: 1, CreatedAt: created}
			if err := s.InsertRun(ctx, r); err != nil {
				t.Fatal(err)
			}
			if err := s.OpenGang(ctx, store.Gang{Run: name, Epoch: 1, Size: size, StoreAddr: "10.0.0.1:4000", Secret: "s", CreatedAt: now}); err != nil {
				t.Fatal(err)
			}
			for i, w := range workers {
				if ok, err := s.JoinRank(ctx, store.Rank{Run: name, Epoch: 1, Rank: i, Worker: w, Host: "10.0.0.1", JoinedAt: now}); err != nil || !ok {
					t.Fatalf("JoinRank(%s, %d, %s) = %v, %v", name, i, w, ok, err)
				}
			}
		}
		yield := func(name, want string) {
			t.Helper()
			if to, err := s.YieldGang(ctx, name, 1, now, live); err != nil || to != want {
				t.Fatalf("YieldGang(%s) = %q, %v; want %q", name, to, err, want)
			}
		}
		gang("b-old", t0, 2, "w1")
		gang("a-young", t0.Add(time.Second), 2, "w2")  // younger, though its name sorts first
		gang("c-full", t0.Add(2*time.Second), 1, "w3") // complete: it trains
		yield("b-old", "")                             // the oldest never yields
		yield("c-full", "")
		if gs, err := s.OpenGangs(ctx, "a-young"); err != nil || len(gs) != 1 || gs[0].Run != "b-old" {
			t.Fatalf("OpenGangs before a-young = %+v, %v; want b-old", gs, err)
		}
		// An older rendezvous whose workers are gone, or whose rank 0 lost
		// its lease, is not worth yielding to.
		yield2 := func(liveSince, at time.Time, want string) {
			t.Helper()
			if to, err := s.YieldGang(ctx, "a-young", 1, at, liveSince); err != nil || to != want {
				t.Fatalf("YieldGang(a-young) at %v, workers since %v = %q, %v; want %q", at, liveSince, to, err, want)
			}
		}
		yield2(t0.Add(time.Second), now, "")
		yield2(live, now.Add(2*time.Minute), "")
		yield("a-young", "b-old")
		if open, err := s.GangOpen(ctx, "a-young", 1); err != nil || open {
			t.Fatalf("GangOpen(a-young) after yielding = %v, %v", open, err)
		}
		if ok, err := s.JoinRank(ctx, store.Rank{Run: "a-young", Epoch: 1, Rank: 1, Worker: "w3", Host: "10.0.0.1", JoinedAt: now}); err != nil || ok {
			t.Fatalf("JoinRank into a yielded rendezvous = %v, %v", ok, err)
		}
		ks, err := s.ListRanks(ctx, "a-young")
		if err != nil || len(ks) != 1 || !ks[0].LeftAt.Equal(now) || !strings.Contains(ks[0].Note, "yielded its workers to older run b-old") {
			t.Fatalf("a-young's ranks after yielding = %+v, %v", ks, err)
		}
		yield("a-young", "") // closed already
		if ok, err := s.JoinRank(ctx, store.Rank{Run: "b-old", Epoch: 1, Rank: 1, Worker: "w2", Host: "10.0.0.1", JoinedAt: now}); err != nil || !ok {
			t.Fatalf("JoinRank(b-old, 1, w2) = %v, %v", ok, err)
		}
		if open, err := s.GangOpen(ctx, "b-old", 1); err != nil || !open {
			t.Fatalf("GangOpen(b-old) = %v, %v", open, err)
		}
		// A worker already in the older rendezvous cannot help it by
		// yielding (it is busy there: another of its slots).
		gang("d-old", t0.Add(3*time.Second), 3, "w1")
		gang("e-young", t0.Add(4*time.Second), 2, "w2")
		if ok, err := s.JoinRank(ctx, store.Rank{Run: "d-old", Epoch: 1, Rank: 1, Worker: "w2", Host: "10.0.0.1", JoinedAt: now}); err != nil || !ok {
			t.Fatalf("JoinRank(d-old, 1, w2) = %v, %v", ok, err)
		}
		yield("e-young", "")
		if ok, err := s.JoinRank(ctx, store.Rank{Run: "e-young", Epoch: 1, Rank: 1, Worker: "w3", Host: "10.0.0.1", JoinedAt: now}); err != nil || !ok {
			t.Fatalf("JoinRank(e-young, 1, w3) = %v, %v", ok, err)
		}
		yield("e-young", "") // complete now
	})
}

// TestGangYieldCountsFreeSlots: an older rendezvous that only busy workers
// could complete (all their slots taken by runs they lead or ranks they
// hold elsewhere) is not worth yielding to: its workers could not join, so
// a younger run would wait in vain for it to time out. Once a worker has a
// slot free, the younger run yields; on both backends.
func TestGangYieldCountsFreeSlots(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store, _ string) {
		ctx := context.Background()
		now, live := t0.Add(time.Minute), t0
		see := func(id string, slots int) {
			t.Helper()
			if err := s.SeeWorker(ctx, store.Worker{ID: id, Host: "10.0.0.1", StartedAt: t0, SeenAt: t0, Slots: slots}); err != nil {
				t.Fatal(err)
			}
		}
		see("a", 1)
		see("b", 2)
		see("c", 1)
		run := func(name string, created time.Time, status store.RunStatus, owner string) {
			t.Helper()
			r := &store.Run{Name: name, User: "ann", ExperimentPath: "/x", Status: status, Params: `{}`,
				RegisterTo: "main.demo", JobID: 1, LeaseOwner: owner, LeaseUntil: now.Add(time.Minute), LeaseEpoch: 1, CreatedAt: created}
			if err := s.InsertRun(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		gang := func(name string, created time.Time, size int, workers ...string) {
			t.Helper()
			run(name, created, store.StatusStarting, workers[0])
			if err := s.OpenGang(ctx, store.Gang{Run: name, Epoch: 1, Size: size, StoreAddr: "10.0.0.1:4000", Secret: "s", CreatedAt: now}); err != nil {
				t.Fatal(err)
			}
			for i, w := range workers {
				if ok, err := s.JoinRank(ctx, store.Rank{Run: name, Epoch: 1, Rank: i, Worker: w, Host: "10.0.0.1", JoinedAt: now}); err != nil || !ok {
					t.Fatalf("JoinRank(%s, %d, %s) = %v, %v", name, i, w, ok, err)
				}
			}
		}
		yield := func(want string) {
			t.Helper()
			if to, err := s.YieldGang(ctx, "young", 1, now, live); err != nil || to != want {
				t.Fatalf("YieldGang(young) = %q, %v; want %q", to, err, want)
			}
		}
		run("solo", t0, store.StatusRunning, "a") // a's one slot: a long single-node run
		gang("old", t0, 3, "b")                   // needs a and c; b has a slot free for young
		gang("young", t0.Add(time.Second), 2, "c")
		// Deciding not to yield writes nothing (rank 0 asks every poll).
		exec(t, s, noGangWrites[s.Dialect()]...)
		yield("") // three live workers, but a is busy: old cannot complete
		exec(t, s, `DROP TRIGGER hone_test_no_write`+map[store.Dialect]string{store.Postgres: ` ON hone_run_gangs`}[s.Dialect()])
		// a gets a second slot, taken by a rank of another run.
		see("a", 2)
		gang("other", t0.Add(2*time.Second), 3, "d", "a")
		yield("")
		if err := s.LeaveRank(ctx, "other", 1, 1, now, "gone"); err != nil {
			t.Fatal(err)
		}
		yield("old") // a and c (freed by yielding) complete old
	})
}

// noGangWrites makes writing a rendezvous row fail (drop the trigger
// hone_test_no_write to undo).
var noGangWrites = map[store.Dialect][]string{
	store.SQLite: {`CREATE TRIGGER hone_test_no_write BEFORE UPDATE ON hone_run_gangs BEGIN SELECT RAISE(ABORT, 'rendezvous row written'); END`},
	store.Postgres: {`CREATE FUNCTION hone_test_no_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'rendezvous row written'; END $$`,
		`CREATE TRIGGER hone_test_no_write BEFORE UPDATE ON hone_run_gangs FOR EACH ROW EXECUTE FUNCTION hone_test_no_write()`},
}

// exec runs statements on the store's database directly.
func exec(t *testing.T, s *store.Store, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	for _, q := range stmts {
		var err error
		if s.Dialect() == store.Postgres {
			_, err = s.PgxPool().Exec(ctx, q)
		} else {
			_, err = s.SQLDB().ExecContext(ctx, q)
		}
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestGangWorkerSlotsMigrate: a database whose hone_workers predates the
// slots column gets it (default 1) when a store opens it; on both backends.
func TestGangWorkerSlotsMigrate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store, dsn string) {
		ctx := context.Background()
		exec(t, s, `ALTER TABLE hone_workers DROP COLUMN slots`)
		s2, err := store.Open(ctx, store.Config{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		if err := s2.SeeWorker(ctx, store.Worker{ID: "w1", Host: "10.0.0.1", StartedAt: t0, SeenAt: t0, Slots: 3}); err != nil {
			t.Fatal(err)
		}
	})
}
