package catalog_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/catalog"
	"hone/store"
	"hone/store/storetest"
)

func newCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	st, _ := storetest.OpenSQLite(t)
	c, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(t.TempDir(), "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.CreateCatalog(ctx, "main", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateSchema(ctx, "main.demo", ""); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVolumes(t *testing.T) {
	ctx := context.Background()
	c := newCatalog(t)
	if _, err := c.CreateVolume(ctx, "main.nope.files"); !errors.Is(err, catalog.ErrInvalid) || !strings.Contains(err.Error(), "hone catalog create main.nope") {
		t.Fatalf("CreateVolume in a missing schema = %v", err)
	}
	dir, err := c.CreateVolume(ctx, "main.demo.files")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateVolume(ctx, "main.demo.files"); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second CreateVolume = %v, want ErrExists", err)
	}
	e, err := c.PutFile(ctx, "dbfs:/Volumes/main/demo/files/ift/train.jsonl", strings.NewReader("{}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Path != "/Volumes/main/demo/files/ift/train.jsonl" || e.Size != 3 {
		t.Errorf("PutFile = %+v", e)
	}
	for _, p := range []string{"/Volumes/main/demo/files/ift/train.jsonl", "dbfs:/Volumes/main/demo/files/ift/train.jsonl", "/Volumes/main/demo/files/x/../ift/train.jsonl"} {
		got, err := c.VolumePath(p)
		if err != nil || got != filepath.Join(dir, "ift", "train.jsonl") {
			t.Errorf("VolumePath(%s) = %s, %v", p, got, err)
		}
	}
	ls, err := c.ListVolume("/Volumes/main/demo/files")
	if err != nil || len(ls) != 1 || ls[0].Name != "ift" || !ls[0].IsDir || ls[0].Path != "/Volumes/main/demo/files/ift" {
		t.Errorf("ListVolume = %+v, %v", ls, err)
	}
	if _, err := c.VolumePath("/Volumes/main/demo/other/x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("missing volume: %v", err)
	}
}

// TestVolumeConfined: "..", another volume's name and symlinks cannot
// reach outside the volume, for reads and writes.
func TestVolumeConfined(t *testing.T) {
	ctx := context.Background()
	c := newCatalog(t)
	dir, err := c.CreateVolume(ctx, "main.demo.files")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateVolume(ctx, "main.demo.other"); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	// ".." is resolved within the volume: it lands on a missing file.
	if _, err := c.VolumePath("/Volumes/main/demo/files/../other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf(`VolumePath("..") = %v, want not found inside the volume`, err)
	}
	if _, err := c.VolumePath("/Volumes/main/demo/files/link/secret"); !errors.Is(err, catalog.ErrInvalid) {
		t.Errorf("VolumePath through a symlink = %v, want refused", err)
	}
	if _, err := c.PutFile(ctx, "/Volumes/main/demo/files/link/new", strings.NewReader("x")); !errors.Is(err, catalog.ErrInvalid) {
		t.Errorf("PutFile through a symlink = %v, want refused", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
		t.Error("PutFile wrote outside the volume")
	}
	if _, err := c.PutFile(ctx, "/Volumes/main/demo/files/../../../../../../escape", strings.NewReader("x")); err != nil {
		t.Fatal(err) // lands inside the volume as /escape
	}
	if _, err := os.Stat(filepath.Join(dir, "escape")); err != nil {
		t.Errorf("the .. path did not land inside the volume: %v", err)
	}
}
