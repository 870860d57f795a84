package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"hone/store"
	"hone/store/storetest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// syncBuffer collects log output from concurrent registrations.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newCatalog opens a catalog with main.demo created; the clock ticks a
// second per call so creation times are distinct.
func newCatalog(t *testing.T, st *store.Store, root string) (*Catalog, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	var mu sync.Mutex
	now := t0
	c, err := New(Config{Store: st, Root: root, Logger: slog.New(slog.NewTextHandler(logs, nil)), Clock: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.CreateCatalog(ctx, "main", ""); err != nil && !errors.Is(err, store.ErrExists) {
		t.Fatal(err)
	}
	if err := c.CreateSchema(ctx, "main.demo", ""); err != nil && !errors.Is(err, store.ErrExists) {
		t.Fatal(err)
	}
	return c, logs
}

// modelDir writes a small model directory whose weights file holds tag.
func modelDir(t *testing.T, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "final")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"config.json": `{"model_type":"llama"}`, "model.safetensors": tag, "sub/extra.txt": "x"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func weights(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatalf("read the weights in %s: %v", dir, err)
	}
	return string(b)
}

var bot = Name{Catalog: "main", Schema: "demo", Model: "bot"}

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Name
		ok   bool
	}{
		{"main", Name{Catalog: "main"}, true},
		{"main.demo", Name{Catalog: "main", Schema: "demo"}, true},
		{"main.demo.bot-2_x", Name{"main", "demo", "bot-2_x"}, true},
		{"a.b.c.d", Name{}, false},
		{"main..bot", Name{}, false},
		{"-x", Name{}, false},
		{"main/1", Name{}, false},
		{"", Name{}, false},
		{strings.Repeat("a", 129), Name{}, false},
	} {
		got, err := ParseName(tc.in)
		if tc.ok && (err != nil || got != tc.want) {
			t.Errorf("ParseName(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if !tc.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseName(%q) = %+v, %v; want ErrInvalid", tc.in, got, err)
		}
	}
}

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in        string
		want      Ref
		ok, valid bool
	}{
		{"main.demo.bot/3", Ref{Name: bot, Version: 3}, true, true},
		{"main.demo.bot@champion", Ref{Name: bot, Alias: "champion"}, true, true},
		{"main.demo.bot/0", Ref{}, true, false},
		{"main.demo.b!t/1", Ref{}, true, false},
		{"main.demo.bot", Ref{}, false, true},
		{"/models/llama", Ref{}, false, true},
		{"meta-llama/Llama-3.2-1B", Ref{}, false, true},
	} {
		got, ok, err := ParseRef(tc.in)
		if ok != tc.ok || (err == nil) != tc.valid || got != tc.want {
			t.Errorf("ParseRef(%q) = %+v, %v, %v; want %+v, %v, valid %v", tc.in, got, ok, err, tc.want, tc.ok, tc.valid)
		}
	}
}

// TestCatalog runs each case on a fresh store of each backend.
func TestCatalog(t *testing.T) {
	cases := []struct {
		name string
		fn   func(*testing.T, *store.Store)
	}{
		{"names", testNames},
		{"versions and lineage", testVersions},
		{"aliases", testAliases},
		{"concurrent registrations", testConcurrent},
		{"failed move keeps the weights", testFailedMove},
		{"stray version directory", testStrayVersion},
		{"failed commit puts the weights back", testFailedCommit},
	}
	for _, b := range storetest.Backends(t) {
		for _, tc := range cases {
			t.Run(b.Name+"/"+tc.name, func(t *testing.T) {
				st, _ := b.Open(t)
				tc.fn(t, st)
			})
		}
	}
}

func testNames(t *testing.T, st *store.Store) {
	ctx := context.Background()
	c, _ := newCatalog(t, st, t.TempDir())
	if err := c.CreateCatalog(ctx, "main", ""); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateCatalog(main) twice = %v, want ErrExists", err)
	}
	if err := c.CreateCatalog(ctx, "main.x", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("CreateCatalog(main.x) = %v, want ErrInvalid", err)
	}
	if err := c.CreateSchema(ctx, "nope.x", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateSchema(nope.x) = %v, want ErrNotFound", err)
	}
	if n, err := c.CheckTarget(ctx, "main.demo", "run-7"); err != nil || n != (Name{"main", "demo", "run-7"}) {
		t.Errorf("CheckTarget(main.demo) = %+v, %v", n, err)
	}
	if _, err := c.CheckTarget(ctx, "main.other.bot", "x"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "hone catalog create main.other") {
		t.Errorf("CheckTarget(missing schema) = %v, want ErrInvalid naming the fix", err)
	}
	if _, err := c.CheckTarget(ctx, "main", "x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("CheckTarget(main) = %v, want ErrInvalid", err)
	}
}

func testVersions(t *testing.T, st *store.Store) {
	ctx := context.Background()
	c, _ := newCatalog(t, st, t.TempDir())
	src := modelDir(t, "w1")
	v1, err := c.Register(ctx, Registration{Target: bot, SourceDir: src, Run: "run-1", BaseModel: "meta-llama/Llama-3.2-1B",
		DataFingerprint: "sha256:ab", Metrics: `{"train_loss":1.5}`, License: "llama3.2"})
	if err != nil {
		t.Fatal(err)
	}
	if weights(t, src) != "w1" {
		t.Error("a copying registration changed its source")
	}
	moved := modelDir(t, "w2")
	v2, err := c.Register(ctx, Registration{Target: bot, SourceDir: moved, Move: true, Run: "run-2"})
	if err != nil {
		t.Fatal(err)
	}
	if v1.Version != 1 || v2.Version != 2 {
		t.Fatalf("versions = %d, %d; want 1, 2", v1.Version, v2.Version)
	}
	if _, err := os.Stat(moved); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("moved source still exists after registration: %v", err)
	}
	for i, want := range []string{"w1", "w2"} {
		dir := filepath.Join(c.Root(), "main", "demo", "bot", fmt.Sprint(i+1))
		if weights(t, dir) != want {
			t.Errorf("version %d holds %q, want %q", i+1, weights(t, dir), want)
		}
		if _, err := os.Stat(filepath.Join(dir, "sub", "extra.txt")); err != nil {
			t.Errorf("version %d lacks a nested file: %v", i+1, err)
		}
	}
	got, err := c.Resolve(ctx, Ref{Name: bot, Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := store.ModelVersion{Catalog: "main", Schema: "demo", Model: "bot", Version: 1,
		StorageLocation: filepath.Join(c.Root(), "main", "demo", "bot", "1"), Run: "run-1", BaseModel: "meta-llama/Llama-3.2-1B",
		DataFingerprint: "sha256:ab", Metrics: `{"train_loss":1.5}`, License: "llama3.2", Aliases: []string{}}
	got.CreatedAt = time.Time{}
	if fmt.Sprint(*got) != fmt.Sprint(want) {
		t.Errorf("Resolve(/1) = %+v\nwant %+v", *got, want)
	}
	vs, err := c.Show(ctx, "main.demo.bot")
	if err != nil || len(vs) != 2 || vs[1].Run != "run-2" || !vs[0].CreatedAt.Before(vs[1].CreatedAt) {
		t.Errorf("Show = %+v, %v; want two versions in order with their runs", vs, err)
	}
	if _, err := c.Resolve(ctx, Ref{Name: bot, Version: 3}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Resolve(/3) = %v, want ErrNotFound", err)
	}
	if _, err := c.Register(ctx, Registration{Target: bot, SourceDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not a model directory") {
		t.Errorf("Register(dir without config.json) = %v", err)
	}
	all, err := c.List(ctx)
	if err != nil || len(all) != 2 {
		t.Errorf("List = %d versions, %v; want 2", len(all), err)
	}
	adapterDir := t.TempDir() // a LoRA adapter registers alone, naming its base
	os.WriteFile(filepath.Join(adapterDir, "adapter_config.json"), []byte(`{"peft_type": "LORA", "r": 4}`), 0o644)
	if v, err := c.Register(ctx, Registration{Target: Name{"main", "demo", "ad"}, SourceDir: adapterDir, BaseModel: "main.demo.bot/1"}); err != nil || v.BaseModel != "main.demo.bot/1" {
		t.Errorf("Register(adapter dir) = %+v, %v", v, err)
	}
}

func testAliases(t *testing.T, st *store.Store) {
	ctx := context.Background()
	c, _ := newCatalog(t, st, t.TempDir())
	for i := 0; i < 2; i++ {
		if _, err := c.Register(ctx, Registration{Target: bot, SourceDir: modelDir(t, "w")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetAlias(ctx, "main.demo.bot", 1, "champion"); err != nil {
		t.Fatal(err)
	}
	ref := Ref{Name: bot, Alias: "champion"}
	if v, err := c.Resolve(ctx, ref); err != nil || v.Version != 1 || !slices.Equal(v.Aliases, []string{"champion"}) {
		t.Fatalf("Resolve(@champion) = %+v, %v; want version 1", v, err)
	}
	if err := c.SetAlias(ctx, "main.demo.bot", 2, "champion"); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Resolve(ctx, ref); err != nil || v.Version != 2 {
		t.Fatalf("Resolve(@champion) after moving it = %+v, %v; want version 2", v, err)
	}
	for _, bad := range []string{"42", "a.b", "-x", ""} {
		if err := c.SetAlias(ctx, "main.demo.bot", 1, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetAlias(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := c.SetAlias(ctx, "main.demo.bot", 9, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetAlias(version 9) = %v, want ErrNotFound", err)
	}
	if err := c.SetAlias(ctx, "main.demo", 1, "x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetAlias(main.demo) = %v, want ErrInvalid", err)
	}
	if err := c.RemoveAlias(ctx, "main.demo.bot", "champion"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resolve(ctx, ref); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Resolve(@champion) after removal = %v, want ErrNotFound", err)
	}
}

func testConcurrent(t *testing.T, st *store.Store) {
	ctx := context.Background()
	c, _ := newCatalog(t, st, t.TempDir())
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		src := modelDir(t, fmt.Sprint("w", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Register(ctx, Registration{Target: bot, SourceDir: src, Move: i%2 == 0, Run: fmt.Sprint("run-", i)})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("registration %d: %v", i, err)
		}
	}
	vs, err := c.Show(ctx, "main.demo.bot")
	if err != nil || len(vs) != n {
		t.Fatalf("Show = %d versions, %v; want %d", len(vs), err, n)
	}
	runs := map[string]bool{}
	for _, v := range vs {
		w := weights(t, v.StorageLocation)
		if w != "w"+strings.TrimPrefix(v.Run, "run-") {
			t.Errorf("version %d of %s holds %q", v.Version, v.Run, w)
		}
		runs[v.Run] = true
	}
	if len(runs) != n {
		t.Errorf("versions record runs %v; want %d distinct", runs, n)
	}
}

// testFailedMove: a registration that fails leaves a moved model where it
// was (the run's final directory), not deleted with a staging copy.
func testFailedMove(t *testing.T, st *store.Store) {
	ctx := context.Background()
	c, _ := newCatalog(t, st, t.TempDir())
	src := modelDir(t, "trained")
	_, err := c.Register(ctx, Registration{Target: Name{"main", "missing", "bot"}, SourceDir: src, Move: true})
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), src) {
		t.Fatalf("Register(missing schema) = %v; want ErrNotFound naming where the weights are", err)
	}
	if weights(t, src) != "trained" {
		t.Fatal("weights changed")
	}
	// The stray of a crashed registration in the way of version 1 is moved
	// aside before the rename, and nothing is lost if that fails either.
	target := filepath.Join(c.Root(), "main", "demo", "bot", "1")
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Root(), ".orphaned"), nil, 0o644); err != nil {
		t.Fatal(err) // a file where the directory for strays should go
	}
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, Registration{Target: bot, SourceDir: src, Move: true}); err == nil {
		t.Fatal("Register succeeded although the stray could not be moved aside")
	}
	if weights(t, src) != "trained" {
		t.Fatal("weights lost by a failed registration")
	}
	if vs, err := c.Show(ctx, "main.demo.bot"); err == nil && len(vs) != 0 {
		t.Fatalf("a failed registration left versions %+v", vs)
	}
}

// testStrayVersion: a crash between moving a version directory into place
// and committing its row leaves <model>/<N> without a row; the next
// registration moves it aside (logged) and takes version N.
func testStrayVersion(t *testing.T, st *store.Store) {
	ctx := context.Background()
	c, logs := newCatalog(t, st, t.TempDir())
	if _, err := c.Register(ctx, Registration{Target: bot, SourceDir: modelDir(t, "w1")}); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(c.Root(), "main", "demo", "bot", "2")
	if err := os.Rename(modelDir(t, "crashed"), stray); err != nil {
		t.Fatal(err)
	}
	v, err := c.Register(ctx, Registration{Target: bot, SourceDir: modelDir(t, "w2"), Move: true})
	if err != nil {
		t.Fatalf("Register after a crashed registration: %v", err)
	}
	if v.Version != 2 || weights(t, v.StorageLocation) != "w2" {
		t.Fatalf("Register = version %d holding %q; want 2 holding w2", v.Version, weights(t, v.StorageLocation))
	}
	aside, _ := filepath.Glob(filepath.Join(c.Root(), ".orphaned", "main.demo.bot-2-*"))
	if len(aside) != 1 || weights(t, aside[0]) != "crashed" {
		t.Fatalf("set aside %v; want the crashed registration's directory", aside)
	}
	if !strings.Contains(logs.String(), "moved aside") || !strings.Contains(logs.String(), aside[0]) {
		t.Errorf("log does not say where the stray went:\n%s", logs.String())
	}
}

// testFailedCommit: when the transaction fails to commit after the model
// directory was renamed into place, the directory goes back to the run. The
// commit is made to fail by cancelling the context from the clock, which
// the catalog reads (for the stray's new name) between the insert and the
// rename: both drivers refuse to commit a transaction whose context is done.
func testFailedCommit(t *testing.T, st *store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := t.TempDir()
	newCatalog(t, st, root) // creates main.demo
	var calls int
	c, err := New(Config{Store: st, Root: root, Clock: func() time.Time {
		if calls++; calls == 2 {
			cancel()
		}
		return t0
	}})
	if err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(root, "main", "demo", "bot", "1")
	if err := os.MkdirAll(stray, 0o755); err != nil {
		t.Fatal(err)
	}
	src := modelDir(t, "trained")
	if _, err := c.Register(ctx, Registration{Target: bot, SourceDir: src, Move: true}); err == nil {
		t.Fatal("Register succeeded although its transaction could not commit")
	}
	if weights(t, src) != "trained" {
		t.Fatal("weights not put back")
	}
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("version directory left without a row: %v", err)
	}
	if vs, err := c.Show(context.Background(), "main.demo.bot"); err == nil && len(vs) != 0 {
		t.Fatalf("a failed registration left versions %+v", vs)
	}
}

// TestStagingOfLiveProcessKept: a catalog starting on the same root (another
// process, or a restart) removes only staging copies no live process holds.
func TestStagingOfLiveProcessKept(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	root := t.TempDir()
	c, _ := newCatalog(t, st, root)
	live, err := c.stage(modelDir(t, "copying"))
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(root, stagingDir)
	// A process that died mid-copy leaves its directory and an unlocked
	// lock file; an older hone left a bare directory.
	dead := filepath.Join(base, "dead")
	legacy := filepath.Join(base, "run-1-1700000000")
	for _, dir := range []string{dead, legacy} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(dead+".lock", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, logs := newCatalog(t, st, root)
	if weights(t, live.dir) != "copying" {
		t.Fatal("a starting catalog removed a live registration's staging copy")
	}
	for _, p := range []string{dead, dead + ".lock", legacy} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale %s not cleaned: %v", p, err)
		}
	}
	if !strings.Contains(logs.String(), "interrupted registration") {
		t.Errorf("cleaning was not logged:\n%s", logs.String())
	}
	live.release()
	if entries, _ := os.ReadDir(base); len(entries) != 0 {
		t.Errorf("release left %v", entries)
	}
}
