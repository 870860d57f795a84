package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"hone/store"
)

// Volumes are managed folders for files (training data, tables) named like
// models, catalog.schema.volume, and addressed as
// /Volumes/<catalog>/<schema>/<volume>/<path> (also with a dbfs: prefix), as
// in the hosted product. A volume is its folder under <Root>/.volumes/ (the
// dot keeps it apart from catalog folders, whose names cannot start with
// one); its schema must exist in the store. Every path is confined to its
// volume: neither ".." nor a symlink inside the volume reaches outside.

const volumesDir = ".volumes"

// VolumePrefixes are the prefixes of a volume path.
var VolumePrefixes = []string{"/Volumes/", "dbfs:/Volumes/"}

// IsVolumePath reports whether p is a volume path.
func IsVolumePath(p string) bool {
	return slices.ContainsFunc(VolumePrefixes, func(pre string) bool { return strings.HasPrefix(p, pre) })
}

// VolumeEntry is a file or folder in a volume.
type VolumeEntry struct {
	Name     string    `json:"name"`
	Path     string    `json:"path"` // /Volumes/... path
	IsDir    bool      `json:"is_dir"`
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
}

// CreateVolume makes the managed folder of "catalog.schema.volume" and
// returns it; the schema must exist.
func (c *Catalog) CreateVolume(ctx context.Context, name string) (string, error) {
	n, err := ParseName(name)
	if err != nil {
		return "", err
	}
	if n.Model == "" {
		return "", invalidf("volume name %q must have three parts, catalog.schema.volume", name)
	}
	if _, err := c.st.GetSchema(ctx, n.Catalog, n.Schema); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return "", invalidf("volume %s: schema %s.%s does not exist (create it with: hone catalog create %s.%s)", name, n.Catalog, n.Schema, n.Catalog, n.Schema)
		}
		return "", err
	}
	dir := volumeDir(c.root, n)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("catalog: volume %s: %w", name, err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if os.IsExist(err) {
			return "", fmt.Errorf("volume %s: %w", name, store.ErrExists)
		}
		return "", fmt.Errorf("catalog: volume %s: %w", name, err)
	}
	return dir, nil
}

func volumeDir(root string, n Name) string {
	return filepath.Join(root, volumesDir, n.Catalog, n.Schema, n.Model)
}

// volumePath splits a volume path into its volume's folder (which must
// exist) and the cleaned path inside it ("" for the volume itself); shown
// is the path as /Volumes/... without dbfs: or "..".
func volumePath(root, p string) (dir, rel, shown string, err error) {
	rest := ""
	for _, pre := range VolumePrefixes {
		if strings.HasPrefix(p, pre) {
			rest = strings.TrimPrefix(p, pre)
		}
	}
	if rest == "" {
		return "", "", "", invalidf("path %q: want /Volumes/<catalog>/<schema>/<volume>/...", p)
	}
	parts := strings.SplitN(rest, "/", 4)
	if len(parts) < 3 {
		return "", "", "", invalidf("path %q: want /Volumes/<catalog>/<schema>/<volume>/...", p)
	}
	n, err := ParseName(strings.Join(parts[:3], "."))
	if err != nil {
		return "", "", "", invalidf("path %q: %v", p, err)
	}
	dir = volumeDir(root, n)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", "", "", fmt.Errorf("volume %s (create it with: hone catalog create-volume %s): %w", n, n, store.ErrNotFound)
	}
	if len(parts) == 4 {
		// Lexically inside: path.Clean of a rooted path cannot climb above
		// the root, so ".." stays in the volume.
		rel = strings.TrimPrefix(path.Clean("/"+parts[3]), "/")
	}
	shown = "/Volumes/" + strings.Join(parts[:3], "/")
	if rel != "" {
		shown += "/" + rel
	}
	return dir, rel, shown, nil
}

// confineVolume follows the symlinks of local (or of its longest existing
// parent, for a file still to be written) and refuses a real path outside
// the volume's real folder.
func confineVolume(dir, local, p string) (string, error) {
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("catalog: volume folder: %w", err)
	}
	existing, missing := local, ""
	for {
		real, err := filepath.EvalSymlinks(existing)
		if err == nil {
			real = filepath.Join(real, missing)
			if real != realDir && !strings.HasPrefix(real, realDir+string(filepath.Separator)) {
				return "", invalidf("path %s leads outside its volume", p)
			}
			return real, nil
		}
		if !os.IsNotExist(err) || existing == dir {
			return "", fmt.Errorf("catalog: %s: %w", p, err)
		}
		missing = filepath.Join(filepath.Base(existing), missing)
		existing = filepath.Dir(existing)
	}
}

// VolumePath resolves a volume path to the real local path of an existing
// file or folder, confined to its volume.
func (c *Catalog) VolumePath(p string) (string, error) { return VolumeFile(c.root, p) }

// VolumeFile is VolumePath for the catalog whose artifact root is root,
// for local tools that have the files but no store.
func VolumeFile(root, p string) (string, error) {
	dir, rel, _, err := volumePath(root, p)
	if err != nil {
		return "", err
	}
	real, err := confineVolume(dir, filepath.Join(dir, filepath.FromSlash(rel)), p)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(real); err != nil {
		return "", fmt.Errorf("%s: %w", p, store.ErrNotFound)
	}
	return real, nil
}

// PutFile writes r to the volume path p, creating parent folders; the file
// appears complete or not at all (temporary file, fsync, rename).
func (c *Catalog) PutFile(ctx context.Context, p string, r io.Reader) (*VolumeEntry, error) {
	dir, rel, shown, err := volumePath(c.root, p)
	if err != nil {
		return nil, err
	}
	if rel == "" {
		return nil, invalidf("path %s is the volume itself: name a file inside it", p)
	}
	dst, err := confineVolume(dir, filepath.Join(dir, filepath.FromSlash(rel)), p)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(dst); err == nil && fi.IsDir() {
		return nil, invalidf("path %s is a folder", p)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return nil, fmt.Errorf("catalog: %s: %w", p, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".upload-*")
	if err != nil {
		return nil, fmt.Errorf("catalog: %s: %w", p, err)
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	n, err := io.Copy(tmp, ctxReader{ctx, r})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: write %s: %w", p, err)
	}
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		d.Sync()
		d.Close()
	}
	fi, err := os.Stat(dst)
	if err != nil {
		return nil, fmt.Errorf("catalog: %s: %w", p, err)
	}
	return &VolumeEntry{Name: filepath.Base(dst), Path: shown, Size: n, Modified: fi.ModTime().UTC()}, nil
}

// ListVolume lists the folder at p (or returns the file itself).
func (c *Catalog) ListVolume(p string) ([]VolumeEntry, error) {
	real, err := c.VolumePath(p)
	if err != nil {
		return nil, err
	}
	_, _, base, _ := volumePath(c.root, p)
	fi, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("catalog: %s: %w", p, err)
	}
	if !fi.IsDir() {
		return []VolumeEntry{{Name: fi.Name(), Path: base, Size: fi.Size(), Modified: fi.ModTime().UTC()}}, nil
	}
	ents, err := os.ReadDir(real)
	if err != nil {
		return nil, fmt.Errorf("catalog: %s: %w", p, err)
	}
	out := []VolumeEntry{}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".upload-") {
			continue // an upload in progress
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		ve := VolumeEntry{Name: e.Name(), Path: base + "/" + e.Name(), IsDir: e.IsDir(), Modified: info.ModTime().UTC()}
		if !e.IsDir() {
			ve.Size = info.Size()
		}
		out = append(out, ve)
	}
	return out, nil
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(b []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(b)
}
