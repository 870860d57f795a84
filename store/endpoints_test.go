package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"hone/store"
	"hone/store/storetest"
)

// TestEndpoints: endpoints are created once per name, read back as
// written, paged by name, and deleted; on both backends.
func TestEndpoints(t *testing.T) {
	storetest.Each(t, func(t *testing.T, s *store.Store, _ string) {
		ctx := context.Background()
		if l, next, err := s.PageEndpoints(ctx, store.Page{}); err != nil || len(l) != 0 || l == nil || next != "" {
			t.Fatalf("PageEndpoints(empty) = %v, %q, %v; want [] and no next page", l, next, err)
		}
		e := store.Endpoint{Name: "bot", Model: "main.demo.bot@champion", CreatedAt: t0}
		if err := s.CreateEndpoint(ctx, e); err != nil {
			t.Fatal(err)
		}
		dup := e
		dup.Model = "main.demo.bot/1"
		if err := s.CreateEndpoint(ctx, dup); !errors.Is(err, store.ErrExists) {
			t.Fatalf("CreateEndpoint(dup) = %v, want ErrExists", err)
		}
		if got, err := s.GetEndpoint(ctx, "bot"); err != nil || *got != e {
			t.Fatalf("GetEndpoint(bot) = %+v, %v; want %+v", got, err, e)
		}
		if _, err := s.GetEndpoint(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetEndpoint(nope) = %v, want ErrNotFound", err)
		}
		for i := range 4 {
			if err := s.CreateEndpoint(ctx, store.Endpoint{Name: fmt.Sprintf("ep%d", i), Model: "main.demo.bot/1", CreatedAt: t0}); err != nil {
				t.Fatal(err)
			}
		}
		var names []string
		p := store.Page{Limit: 2}
		for pages := 1; ; pages++ {
			l, next, err := s.PageEndpoints(ctx, p)
			if err != nil || len(l) > 2 || pages > 3 {
				t.Fatalf("PageEndpoints(%+v) = %v, %v (page %d)", p, l, err, pages)
			}
			for _, e := range l {
				names = append(names, e.Name)
			}
			if next == "" {
				break
			}
			p.Token = next
		}
		if fmt.Sprint(names) != "[bot ep0 ep1 ep2 ep3]" {
			t.Errorf("paged endpoints = %v, want [bot ep0 ep1 ep2 ep3]", names)
		}
		if _, _, err := s.PageExperiments(ctx, store.Page{Token: p.Token}); !errors.Is(err, store.ErrBadPageToken) {
			t.Errorf("PageExperiments(an endpoints token) = %v, want ErrBadPageToken", err)
		}
		if err := s.DeleteEndpoint(ctx, "bot"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteEndpoint(ctx, "bot"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteEndpoint twice = %v, want ErrNotFound", err)
		}
		if _, err := s.GetEndpoint(ctx, "bot"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetEndpoint(deleted) = %v, want ErrNotFound", err)
		}
	})
}
