package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"hone/store"
	"hone/store/storetest"
)

// TestSweeps: a sweep is stored once per name with its runs in grid
// order, read back as written, and listed newest first per user; on both
// backends.
func TestSweeps(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store, _ string) {
		ctx := context.Background()
		a := store.Sweep{Name: "sweep-a", User: "ann", ExperimentPath: "/Users/ann/hone/sweep-a", Params: `{"x":1}`,
			CreatedAt: t0, Runs: []string{"r3", "r1", "r2"}}
		b := store.Sweep{Name: "sweep-b", User: "bob", ExperimentPath: "/Users/bob/x", Params: `{}`, CreatedAt: t0.Add(time.Second), Runs: []string{"q"}}
		for _, sw := range []store.Sweep{a, b} {
			if err := s.InsertSweep(ctx, &sw); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.InsertSweep(ctx, &a); !errors.Is(err, store.ErrExists) {
			t.Fatalf("InsertSweep(dup) = %v, want ErrExists", err)
		}
		got, err := s.GetSweep(ctx, "sweep-a")
		if err != nil || got.User != a.User || got.ExperimentPath != a.ExperimentPath || got.Params != a.Params ||
			!got.CreatedAt.Equal(a.CreatedAt) || !slices.Equal(got.Runs, a.Runs) {
			t.Fatalf("GetSweep(sweep-a) = %+v, %v; want %+v", got, err, a)
		}
		if _, err := s.GetSweep(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetSweep(nope) = %v, want ErrNotFound", err)
		}
		if l, err := s.ListSweeps(ctx, "", 10); err != nil || !slices.Equal(l, []string{"sweep-b", "sweep-a"}) {
			t.Fatalf("ListSweeps(all) = %v, %v", l, err)
		}
		if l, err := s.ListSweeps(ctx, "ann", 10); err != nil || !slices.Equal(l, []string{"sweep-a"}) {
			t.Fatalf("ListSweeps(ann) = %v, %v", l, err)
		}
		if l, err := s.ListSweeps(ctx, "", 1); err != nil || !slices.Equal(l, []string{"sweep-b"}) {
			t.Fatalf("ListSweeps(limit 1) = %v, %v", l, err)
		}
	})
}
