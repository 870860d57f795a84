package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"hone/catalog"
	"hone/client"
	"hone/internal/testmodel"
	"hone/store"
)

// TestEndpointsCLI drives hone endpoints against hone serve: create on an
// alias, get --json, list (text and --json, [] when empty), the endpoint
// following the alias moved with hone catalog alias, and delete, which
// leaves the model.
func TestEndpointsCLI(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	serve := serveCmd()
	serve.SetArgs([]string{"--home", home, "--data-root", t.TempDir(), "--addr", addr})
	done := make(chan error, 1)
	go func() { done <- serve.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hone serve: %v", err)
		}
	}()
	server := "http://" + addr
	c, _ := client.New(client.Config{Server: server})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := c.Endpoints(ctx); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("hone serve did not answer: %v", err)
		}
	}
	hone := func(cmd *cobra.Command, args ...string) (string, error) {
		t.Helper()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append(args, "--server", server))
		err := cmd.ExecuteContext(ctx)
		return out.String(), err
	}
	mustHone := func(cmd *cobra.Command, args ...string) string {
		t.Helper()
		out, err := hone(cmd, args...)
		if err != nil {
			t.Fatalf("hone %s %s: %v\n%s", cmd.Name(), strings.Join(args, " "), err, out)
		}
		return out
	}
	if out := mustHone(endpointsCmd(), "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("hone endpoints list --json (none) = %q, want []", out)
	}
	registerBot(t, home)

	if _, err := hone(endpointsCmd(), "create", "bad.name", "--model", "main.demo.bot/1"); err == nil || !strings.Contains(err.Error(), "endpoint name") {
		t.Errorf("hone endpoints create bad.name = %v, want a refusal naming the endpoint name", err)
	}
	out := mustHone(endpointsCmd(), "create", "bot", "--model", "main.demo.bot@champion")
	if !strings.Contains(out, "state:    READY") || !strings.Contains(out, "serving:  main.demo.bot/1") {
		t.Errorf("hone endpoints create bot = %q, want READY serving main.demo.bot/1", out)
	}
	get := func() map[string]any {
		t.Helper()
		var e map[string]any
		out := mustHone(endpointsCmd(), "get", "bot", "--json")
		if err := json.Unmarshal([]byte(out), &e); err != nil {
			t.Fatalf("hone endpoints get bot --json = %q: %v", out, err)
		}
		return e
	}
	if e := get(); e["name"] != "bot" || e["model"] != "main.demo.bot@champion" || e["version"] != 1.0 || e["state"] != "READY" {
		t.Errorf("hone endpoints get bot --json = %v, want name, model, version 1, state READY", e)
	}
	if res, err := c.Generate(ctx, client.GenerateRequest{Model: "bot", Prompt: "Hi", MaxTokens: 2}); err != nil || res.Model != "main.demo.bot/1" {
		t.Errorf("Generate(model bot) = %+v, %v; want an answer from main.demo.bot/1", res, err)
	}
	mustHone(catalogCmd(), "alias", "main.demo.bot", "2", "champion")
	if e := get(); e["version"] != 2.0 {
		t.Errorf("after hone catalog alias main.demo.bot 2 champion: endpoint = %v, want version 2", e)
	}
	if out := mustHone(endpointsCmd(), "list"); !strings.Contains(out, "bot   READY  main.demo.bot@champion  main.demo.bot/2") {
		t.Errorf("hone endpoints list =\n%s\nwant bot READY on main.demo.bot/2", out)
	}
	var listed []client.Endpoint
	if err := json.Unmarshal([]byte(mustHone(endpointsCmd(), "list", "--json")), &listed); err != nil || len(listed) != 1 || listed[0].Version != 2 {
		t.Errorf("hone endpoints list --json = %+v, %v; want bot on version 2", listed, err)
	}
	mustHone(endpointsCmd(), "delete", "bot")
	if _, err := hone(endpointsCmd(), "get", "bot"); err == nil || !strings.Contains(err.Error(), "endpoint bot") {
		t.Errorf("hone endpoints get (deleted) = %v, want not found naming it", err)
	}
	if out := mustHone(endpointsCmd(), "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("hone endpoints list --json after delete = %q, want []", out)
	}
	var m client.Model
	if err := json.Unmarshal([]byte(mustHone(catalogCmd(), "show", "main.demo.bot", "--json")), &m); err != nil || len(m.Versions) != 2 {
		t.Errorf("hone catalog show main.demo.bot after deleting its endpoint = %+v, %v; want both versions", m, err)
	}
}

// registerBot registers two tiny Llama 3 versions of main.demo.bot in the
// state directory of a running hone serve, champion on version 1.
func registerBot(t *testing.T, home string) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{DSN: filepath.Join(home, "hone.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.CreateCatalog(ctx, "main", ""); err != nil {
		t.Fatal(err)
	}
	if err := cat.CreateSchema(ctx, "main.demo", ""); err != nil {
		t.Fatal(err)
	}
	for seed := uint64(1); seed <= 2; seed++ {
		src := filepath.Join(t.TempDir(), "model")
		testmodel.Write(t, src, testmodel.Llama3Tiny, seed)
		if _, err := cat.Register(ctx, catalog.Registration{Target: catalog.Name{Catalog: "main", Schema: "demo", Model: "bot"},
			SourceDir: src, Move: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cat.SetAlias(ctx, "main.demo.bot", 1, "champion"); err != nil {
		t.Fatal(err)
	}
}
