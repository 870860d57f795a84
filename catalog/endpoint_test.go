package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"

	"hone/store"
	"hone/store/storetest"
)

// TestEndpoints: an endpoint on an alias follows the alias as it moves,
// is NOT_READY while the alias is gone, and deleting it leaves the model.
func TestEndpoints(t *testing.T) {
	storetest.Each(t, func(t *testing.T, st *store.Store, _ string) {
		c, _ := newCatalog(t, st, t.TempDir())
		ctx := context.Background()
		bot := Name{"main", "demo", "bot"}
		for _, tag := range []string{"one", "two"} {
			if _, err := c.Register(ctx, Registration{Target: bot, SourceDir: modelDir(t, tag)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.SetAlias(ctx, "main.demo.bot", 1, "champion"); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ name, model, want string }{
			{"a.b", "main.demo.bot/1", "endpoint name"},
			{"-x", "main.demo.bot/1", "endpoint name"},
			{"", "main.demo.bot/1", "endpoint name"},
			{"ep", "main.demo.bot", "want catalog.schema.model/N"},
			{"ep", "main.demo.bot/9", "version 9"},
			{"ep", "main.demo.bot@prod", "alias prod"},
			{"ep", "main.demo.nope/1", "main.demo.nope"},
		} {
			if _, err := c.CreateEndpoint(ctx, tc.name, tc.model); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CreateEndpoint(%q, %q) = %v, want ErrInvalid containing %q", tc.name, tc.model, err, tc.want)
			}
		}
		e, err := c.CreateEndpoint(ctx, "bot", "main.demo.bot@champion")
		if err != nil || e.State != EndpointReady || e.Version == nil || e.Version.Version != 1 || e.Model != "main.demo.bot@champion" {
			t.Fatalf("CreateEndpoint = %+v, %v; want READY on version 1", e, err)
		}
		if _, err := c.CreateEndpoint(ctx, "bot", "main.demo.bot/2"); !errors.Is(err, store.ErrExists) {
			t.Errorf("CreateEndpoint(taken name) = %v, want ErrExists", err)
		}
		if _, err := c.CreateEndpoint(ctx, "pinned", "main.demo.bot/1"); err != nil {
			t.Fatal(err)
		}
		serving := func(name string) int {
			t.Helper()
			v, err := c.ServeEndpoint(ctx, name)
			if err != nil {
				t.Fatalf("ServeEndpoint(%s): %v", name, err)
			}
			return v.Version
		}
		if err := c.SetAlias(ctx, "main.demo.bot", 2, "champion"); err != nil {
			t.Fatal(err)
		}
		if got, pinned := serving("bot"), serving("pinned"); got != 2 || pinned != 1 {
			t.Errorf("after moving champion to 2: bot serves %d, pinned %d; want 2 and 1", got, pinned)
		}
		if err := c.RemoveAlias(ctx, "main.demo.bot", "champion"); err != nil {
			t.Fatal(err)
		}
		e, err = c.GetEndpoint(ctx, "bot")
		if err != nil || e.State != EndpointNotReady || e.Version != nil || !strings.Contains(e.Reason, "alias champion") {
			t.Errorf("GetEndpoint(alias removed) = %+v, %v; want NOT_READY naming the alias", e, err)
		}
		if _, err := c.ServeEndpoint(ctx, "bot"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "endpoint bot is NOT_READY") {
			t.Errorf("ServeEndpoint(not ready) = %v, want ErrNotFound naming the endpoint", err)
		}
		if _, err := c.ServeEndpoint(ctx, "nope"); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), `model "nope": no endpoint`) {
			t.Errorf("ServeEndpoint(nope) = %v, want ErrNotFound naming it", err)
		}
		if err := c.SetAlias(ctx, "main.demo.bot", 1, "champion"); err != nil {
			t.Fatal(err)
		}
		if got := serving("bot"); got != 1 {
			t.Errorf("alias set again on 1: bot serves %d", got)
		}
		es, next, err := c.PageEndpoints(ctx, store.Page{})
		if err != nil || next != "" || len(es) != 2 || es[0].Name != "bot" || es[1].Name != "pinned" || es[1].State != EndpointReady {
			t.Errorf("PageEndpoints = %+v, %q, %v", es, next, err)
		}
		for _, name := range []string{"bot", "pinned"} {
			if err := c.DeleteEndpoint(ctx, name); err != nil {
				t.Fatal(err)
			}
		}
		if vs, err := c.Show(ctx, "main.demo.bot"); err != nil || len(vs) != 2 || vs[0].Aliases[0] != "champion" {
			t.Errorf("model after deleting its endpoints = %+v, %v; want both versions, champion on 1", vs, err)
		}
		if err := c.DeleteEndpoint(ctx, "bot"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("DeleteEndpoint(gone) = %v, want ErrNotFound", err)
		}
	})
}
