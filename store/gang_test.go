package store_test

import (
	"context"
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
