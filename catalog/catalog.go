// Package catalog is hone's model registry: three-level names
// catalog.schema.model, catalogs and schemas created explicitly, numbered
// versions with lineage (run, base model, data fingerprint, metrics, licence)
// and aliases such as "champion", and serving endpoints, names that serve a
// version or follow an alias (endpoint.go). Every version is a complete
// Hugging Face model directory in the artifact store, at
// <Root>/<catalog>/<schema>/<model>/<version>/.
//
// A version's directory is moved into place inside the transaction that
// adds its row. A crash between the two leaves a directory without a row;
// the next registration of that model moves it aside to <Root>/.orphaned
// (logged) and takes the number. Copies are staged under <Root>/.staging
// (see staging.go).
//
// A *Catalog is safe for concurrent use, also by several processes sharing
// Root and the store; rows live in a store.Store.
package catalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"hone/engine"
	"hone/store"
)

// ErrInvalid marks a malformed name or request; the message says why.
var ErrInvalid = errors.New("invalid")

type invalidError struct{ msg string }

func (e invalidError) Error() string        { return e.msg }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, a ...any) error { return invalidError{fmt.Sprintf(format, a...)} }

// Config configures a Catalog.
type Config struct {
	Store  *store.Store
	Root   string // artifact store root, e.g. $HONE_HOME/catalog
	Logger *slog.Logger
	Clock  func() time.Time
}

// Catalog registers and resolves model versions.
type Catalog struct {
	st    *store.Store
	root  string
	log   *slog.Logger
	clock func() time.Time
}

// New validates cfg and fills defaults.
func New(cfg Config) (*Catalog, error) {
	if cfg.Store == nil {
		return nil, errors.New("catalog: Store is required")
	}
	if cfg.Root == "" {
		return nil, errors.New("catalog: Root is required")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("catalog: root: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("catalog: root: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	c := &Catalog{st: cfg.Store, root: root, log: cfg.Logger, clock: cfg.Clock}
	c.cleanStaging()
	return c, nil
}

// Root is the artifact store's absolute root.
func (c *Catalog) Root() string { return c.root }

var identRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$`)

// Name is a catalog, schema or model name; trailing parts may be empty.
type Name struct{ Catalog, Schema, Model string }

func (n Name) String() string {
	parts := []string{n.Catalog}
	if n.Schema != "" {
		parts = append(parts, n.Schema)
	}
	if n.Model != "" {
		parts = append(parts, n.Model)
	}
	return strings.Join(parts, ".")
}

// ParseName splits a dotted name of 1 to 3 parts, each a letter, digit or
// underscore followed by up to 127 of those or hyphens.
func ParseName(s string) (Name, error) {
	parts := strings.Split(s, ".")
	if len(parts) > 3 {
		return Name{}, invalidf("name %q: want catalog, catalog.schema or catalog.schema.model", s)
	}
	for _, p := range parts {
		if !identRE.MatchString(p) {
			return Name{}, invalidf("name %q: part %q must be letters, digits, _ or - (not starting with -), at most 128", s, p)
		}
	}
	n := Name{Catalog: parts[0]}
	if len(parts) > 1 {
		n.Schema = parts[1]
	}
	if len(parts) > 2 {
		n.Model = parts[2]
	}
	return n, nil
}

// Ref is a reference to one version: "cat.schema.model/3" or
// "cat.schema.model@alias".
type Ref struct {
	Name    Name
	Version int
	Alias   string
}

var refRE = regexp.MustCompile(`^([^/@]+\.[^/@]+\.[^/@]+)(?:/([0-9]+)|@([A-Za-z0-9_-]+))$`)

// ParseRef reads a version reference; ok is false if s is not shaped like one.
func ParseRef(s string) (ref Ref, ok bool, err error) {
	m := refRE.FindStringSubmatch(s)
	if m == nil {
		return Ref{}, false, nil
	}
	n, err := ParseName(m[1])
	if err != nil {
		return Ref{}, true, err
	}
	ref = Ref{Name: n, Alias: m[3]}
	if m[2] != "" {
		if ref.Version, err = strconv.Atoi(m[2]); err != nil || ref.Version < 1 {
			return Ref{}, true, invalidf("model version reference %q: version must be a positive integer", s)
		}
	}
	return ref, true, nil
}

// CreateCatalog creates a top-level catalog.
func (c *Catalog) CreateCatalog(ctx context.Context, name, comment string) error {
	n, err := ParseName(name)
	if err != nil {
		return err
	}
	if n.Schema != "" {
		return invalidf("catalog name %q must have one part", name)
	}
	return c.st.CreateCatalog(ctx, store.Catalog{Name: n.Catalog, Comment: comment, CreatedAt: c.clock()})
}

// CreateSchema creates "catalog.schema" in an existing catalog.
func (c *Catalog) CreateSchema(ctx context.Context, name, comment string) error {
	n, err := ParseName(name)
	if err != nil {
		return err
	}
	if n.Schema == "" || n.Model != "" {
		return invalidf("schema name %q must have two parts, catalog.schema", name)
	}
	return c.st.CreateSchema(ctx, store.Schema{Catalog: n.Catalog, Name: n.Schema, Comment: comment, CreatedAt: c.clock()})
}

// CheckTarget validates register_to: "catalog.schema" (model named
// defaultModel) or "catalog.schema.model", whose schema must exist.
func (c *Catalog) CheckTarget(ctx context.Context, target, defaultModel string) (Name, error) {
	n, err := ParseName(target)
	if err != nil {
		return Name{}, invalidf("register_to: %v", err)
	}
	if n.Schema == "" {
		return Name{}, invalidf("register_to %q: want catalog.schema or catalog.schema.model", target)
	}
	if _, err := c.st.GetSchema(ctx, n.Catalog, n.Schema); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return Name{}, invalidf("register_to %q: schema %s.%s does not exist (create it with: hone catalog create %s.%s)",
				target, n.Catalog, n.Schema, n.Catalog, n.Schema)
		}
		return Name{}, err
	}
	if n.Model == "" {
		n.Model = defaultModel
		if !identRE.MatchString(n.Model) {
			return Name{}, invalidf("register_to %q: model name %q is not valid", target, n.Model)
		}
	}
	return n, nil
}

// Registration describes a model directory to register as a new version.
type Registration struct {
	Target          Name // full three-part name
	SourceDir       string
	Move            bool // rename SourceDir into the store instead of copying
	Run             string
	BaseModel       string
	DataFingerprint string
	Metrics         string // JSON object
	License         string
}

// Register stores the directory as the model's next version and records
// its lineage. The directory lands complete or not at all. A moved
// SourceDir is renamed straight into place inside the transaction and
// renamed back if the registration fails, so the weights are never lost:
// they stay at SourceDir until registered.
func (c *Catalog) Register(ctx context.Context, r Registration) (*store.ModelVersion, error) {
	if r.Target.Model == "" {
		return nil, invalidf("register: model name is required")
	}
	if _, err := os.Stat(filepath.Join(r.SourceDir, "config.json")); err != nil && !engine.IsAdapterDir(r.SourceDir) {
		return nil, fmt.Errorf("register %s: source is not a model directory (config.json) nor a PEFT adapter directory (adapter_config.json): %w", r.Target, err)
	}
	modelDir := filepath.Join(c.root, r.Target.Catalog, r.Target.Schema, r.Target.Model)
	if err := os.MkdirAll(modelDir, 0o755); err != nil {
		return nil, fmt.Errorf("register %s: %w", r.Target, err)
	}
	src := r.SourceDir
	if !r.Move || !canRename(src, modelDir) {
		st, err := c.stage(r.SourceDir)
		if err != nil {
			return nil, fmt.Errorf("register %s: %w", r.Target, err)
		}
		defer st.release()
		src = st.dir
	}
	for attempt := 0; ; attempt++ {
		v, err := c.commitVersion(ctx, r, src, modelDir)
		if err == nil {
			c.log.Info("registered model version", "model", r.Target.String(), "version", v.Version, "run", r.Run)
			return v, nil
		}
		if !errors.Is(err, store.ErrExists) || attempt >= 4 {
			if src == r.SourceDir {
				err = fmt.Errorf("%w (the model directory stays at %s)", err, src)
			}
			return nil, fmt.Errorf("register %s: %w", r.Target, err)
		}
	}
}

// commitVersion adds the next version's row and renames src to its
// directory in one transaction; if the transaction fails after the rename,
// src is put back.
func (c *Catalog) commitVersion(ctx context.Context, r Registration, src, modelDir string) (*store.ModelVersion, error) {
	var out *store.ModelVersion
	err := c.st.InTx(ctx, func(tx *store.Tx) error {
		next := 1
		vs, err := tx.ListModelVersions(ctx, r.Target.Catalog, r.Target.Schema, r.Target.Model)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if len(vs) > 0 {
			next = vs[len(vs)-1].Version + 1
		}
		dst := filepath.Join(modelDir, strconv.Itoa(next))
		v := store.ModelVersion{Catalog: r.Target.Catalog, Schema: r.Target.Schema, Model: r.Target.Model,
			Version: next, StorageLocation: dst, Run: r.Run, BaseModel: r.BaseModel,
			DataFingerprint: r.DataFingerprint, Metrics: r.Metrics, License: r.License, CreatedAt: c.clock()}
		// The insert holds version next's key until commit, so a directory
		// already at dst has no row and no registration in flight: it is
		// left by one that crashed between its rename and its commit.
		if _, err := tx.AddModelVersion(ctx, v); err != nil {
			return err
		}
		if err := c.setAside(r.Target, next, dst); err != nil {
			return err
		}
		if err := os.Rename(src, dst); err != nil {
			return fmt.Errorf("move the model directory into place: %w", err)
		}
		v.Aliases = []string{}
		out = &v
		return nil
	})
	if err != nil && out != nil { // renamed but not committed: put it back
		if rerr := os.Rename(out.StorageLocation, src); rerr != nil {
			c.log.Error("put back a model directory after a failed registration", "dir", out.StorageLocation, "want", src, "err", rerr)
		}
		return nil, err
	}
	return out, err
}

// setAside moves a version directory that has no row out of the way, to
// <Root>/.orphaned, and logs where it went; nothing is deleted.
func (c *Catalog) setAside(target Name, version int, dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("check %s: %w", dir, err)
	}
	aside := filepath.Join(c.root, ".orphaned", fmt.Sprintf("%s-%d-%d", target, version, c.clock().UnixNano()))
	if err := os.MkdirAll(filepath.Dir(aside), 0o755); err != nil {
		return fmt.Errorf("set aside %s: %w", dir, err)
	}
	if err := os.Rename(dir, aside); err != nil {
		return fmt.Errorf("set aside %s: %w", dir, err)
	}
	c.log.Warn("moved aside a version directory without a catalog row (left by an interrupted registration)",
		"model", target.String(), "version", version, "from", dir, "to", aside)
	return nil
}

// Show returns a model's versions (with aliases), oldest first.
func (c *Catalog) Show(ctx context.Context, name string) ([]store.ModelVersion, error) {
	n, err := ParseName(name)
	if err != nil {
		return nil, err
	}
	if n.Model == "" {
		return nil, invalidf("model name %q must have three parts, catalog.schema.model", name)
	}
	return c.st.ListModelVersions(ctx, n.Catalog, n.Schema, n.Model)
}

// SetAlias points alias at version of the model.
func (c *Catalog) SetAlias(ctx context.Context, model string, version int, alias string) error {
	n, err := c.modelName(model)
	if err != nil {
		return err
	}
	if !identRE.MatchString(alias) || isDigits(alias) {
		return invalidf("alias %q: letters, digits, _ or -, not only digits", alias)
	}
	return c.st.SetAlias(ctx, n.Catalog, n.Schema, n.Model, alias, version)
}

// RemoveAlias deletes an alias.
func (c *Catalog) RemoveAlias(ctx context.Context, model, alias string) error {
	n, err := c.modelName(model)
	if err != nil {
		return err
	}
	return c.st.RemoveAlias(ctx, n.Catalog, n.Schema, n.Model, alias)
}

// Resolve finds the version a reference names.
func (c *Catalog) Resolve(ctx context.Context, ref Ref) (*store.ModelVersion, error) {
	v := ref.Version
	if ref.Alias != "" {
		var err error
		if v, err = c.st.ResolveAlias(ctx, ref.Name.Catalog, ref.Name.Schema, ref.Name.Model, ref.Alias); err != nil {
			return nil, err
		}
	}
	return c.st.GetModelVersion(ctx, ref.Name.Catalog, ref.Name.Schema, ref.Name.Model, v)
}

func (c *Catalog) modelName(model string) (Name, error) {
	n, err := ParseName(model)
	if err != nil {
		return Name{}, err
	}
	if n.Model == "" {
		return Name{}, invalidf("model name %q must have three parts, catalog.schema.model", model)
	}
	return n, nil
}

func isDigits(s string) bool {
	return strings.Trim(s, "0123456789") == ""
}

// copyTree puts a copy of src's tree at dst (which must not exist).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			// Hugging Face cache snapshots link to blobs: copy the target.
			if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
				return nil
			}
		}
		return copyFile(path, target)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
