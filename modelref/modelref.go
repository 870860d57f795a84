// Package modelref resolves the `model` of a run request to a Hugging Face
// model directory: a local directory, a Hugging Face id found in the local
// Hugging Face cache ($HF_HOME/hub or ~/.cache/huggingface/hub), or a catalog
// version ("main.demo.bot/3", "main.demo.bot@champion"). It also carries the
// supported-models table with each family's licence, and refuses
// architectures the engine cannot train, with the engine's reason.
//
// A *Resolver is safe for concurrent use.
package modelref

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"hone/catalog"
	"hone/engine"
	"hone/internal/hfcache"
	"hone/store"
)

// ErrInvalid marks a model reference that cannot be used; the message says why.
var ErrInvalid = errors.New("invalid model")

type invalidError struct{ msg string }

func (e invalidError) Error() string        { return e.msg }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, a ...any) error { return invalidError{fmt.Sprintf(format, a...)} }

// Supported is one row of the supported base models table.
type Supported struct {
	Name       string `json:"name"`
	MaxContext int    `json:"max_context"`
	License    string `json:"license"`
	Retiring   bool   `json:"retiring,omitempty"`
	Trainable  bool   `json:"trainable"` // the engine implements its architecture
	Notes      string `json:"notes,omitempty"`
}

// SupportedModels is the hosted product's table, with hone's licence names.
func SupportedModels() []Supported {
	l32 := "llama3.2 (Llama 3.2 Community License Agreement)"
	l31 := "llama3.1 (Llama 3.1 Community License Agreement)"
	return []Supported{
		{Name: "meta-llama/Llama-3.2-1B", MaxContext: 131072, License: l32, Trainable: true},
		{Name: "meta-llama/Llama-3.2-1B-Instruct", MaxContext: 131072, License: l32, Trainable: true},
		{Name: "meta-llama/Llama-3.2-3B", MaxContext: 131072, License: l32, Trainable: true},
		{Name: "meta-llama/Llama-3.2-3B-Instruct", MaxContext: 131072, License: l32, Trainable: true},
		{Name: "meta-llama/Meta-Llama-3.1-8B", MaxContext: 131072, License: l31, Trainable: true},
		{Name: "meta-llama/Meta-Llama-3.1-8B-Instruct", MaxContext: 131072, License: l31, Trainable: true},
		{Name: "meta-llama/Meta-Llama-3.1-70B", MaxContext: 131072, License: l31, Trainable: true},
		{Name: "meta-llama/Meta-Llama-3.1-70B-Instruct", MaxContext: 131072, License: l31, Trainable: true},
		{Name: "mistralai/Mistral-7B-v0.1", MaxContext: 32768, License: "apache-2.0", Retiring: true, Trainable: true,
			Notes: "retiring"},
		{Name: "mistralai/Mistral-7B-Instruct-v0.2", MaxContext: 32768, License: "apache-2.0", Retiring: true, Trainable: true,
			Notes: "retiring"},
		{Name: "mistralai/Mixtral-8x7B-v0.1", MaxContext: 32768, License: "apache-2.0", Retiring: true, Trainable: true,
			Notes: "retiring; mixture of experts (top-2 of 8)"},
		{Name: "databricks/dbrx-base", MaxContext: 32768, License: "databricks-open-model-license", Retiring: true, Trainable: true,
			Notes: "retiring; mixture of experts (top-4 of 16); full fine-tuning only"},
		{Name: "databricks/dbrx-instruct", MaxContext: 32768, License: "databricks-open-model-license", Retiring: true, Trainable: true,
			Notes: "retiring; mixture of experts (top-4 of 16); full fine-tuning only"},
	}
}

// lookupSupported finds a table row by full id or by its last path element.
func lookupSupported(name string) (Supported, bool) {
	base := strings.ToLower(filepath.Base(name))
	for _, s := range SupportedModels() {
		if strings.EqualFold(s.Name, name) || strings.ToLower(filepath.Base(s.Name)) == base {
			return s, true
		}
	}
	return Supported{}, false
}

// Catalog resolves version references; *catalog.Catalog implements it.
type Catalog interface {
	Resolve(ctx context.Context, ref catalog.Ref) (*store.ModelVersion, error)
}

// Config configures a Resolver.
type Config struct {
	// HFHome is the Hugging Face home; default $HF_HOME, else
	// ~/.cache/huggingface. The cache is HFHome/hub.
	HFHome string
	// Catalog resolves catalog references; nil refuses them.
	Catalog Catalog
	// Confine, when set, vets local directory paths (e.g. to data roots).
	Confine func(path string) (string, error)
}

// Resolver turns model references into directories.
type Resolver struct {
	hfHome  string
	catalog Catalog
	confine func(string) (string, error)
}

// HFHome is the Hugging Face home whose hub cache the resolver reads.
func (r *Resolver) HFHome() string { return r.hfHome }

// New fills defaults.
func New(cfg Config) (*Resolver, error) {
	var err error
	if cfg.HFHome, err = hfcache.Home(cfg.HFHome); err != nil {
		return nil, fmt.Errorf("modelref: %w", err)
	}
	return &Resolver{hfHome: cfg.HFHome, catalog: cfg.Catalog, confine: cfg.Confine}, nil
}

// Resolved is a usable base model.
type Resolved struct {
	Ref        string `json:"ref"`
	Dir        string `json:"dir"`        // HF model directory
	Source     string `json:"source"`     // "path", "hf-cache" or "catalog"
	BaseModel  string `json:"base_model"` // for lineage: the HF id or the root base model
	License    string `json:"license"`
	MaxContext int    `json:"max_context"`
}

var hfIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Resolve finds ref's model directory and checks the engine can train it.
func (r *Resolver) Resolve(ctx context.Context, ref string) (*Resolved, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil, invalidf("model is required")
	}
	var out *Resolved
	if cref, ok, err := catalog.ParseRef(ref); ok {
		if err != nil {
			return nil, invalidf("model %q: %v", ref, err)
		}
		if r.catalog == nil {
			return nil, invalidf("model %q: catalog references are not available here", ref)
		}
		v, err := r.catalog.Resolve(ctx, cref)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return nil, invalidf("model %q: %v", ref, err)
			}
			return nil, err
		}
		out = &Resolved{Ref: ref, Dir: v.StorageLocation, Source: "catalog", BaseModel: v.BaseModel, License: v.License}
	} else if isPath(ref) {
		dir := ref
		if r.confine != nil {
			if dir, err = r.confine(ref); err != nil {
				return nil, invalidf("model: %v", err)
			}
		}
		out = &Resolved{Ref: ref, Dir: dir, Source: "path", BaseModel: ref}
		if s, ok := lookupSupported(dir); ok {
			out.BaseModel, out.License = s.Name, s.License
		}
	} else if hfIDRE.MatchString(ref) {
		dir, err := r.hfSnapshot(ref)
		if err != nil {
			return nil, err
		}
		out = &Resolved{Ref: ref, Dir: dir, Source: "hf-cache", BaseModel: ref}
		if s, ok := lookupSupported(ref); ok {
			out.License = s.License
		}
	} else {
		return nil, invalidf("model %q: not a directory, a Hugging Face id (org/name) or a catalog version (catalog.schema.model/N or @alias)", ref)
	}
	if s, ok := lookupSupported(out.BaseModel); ok && out.License == "" {
		out.License = s.License
	}
	fi, err := os.Stat(out.Dir)
	if err != nil || !fi.IsDir() {
		return nil, invalidf("model %q: %s is not a directory", ref, out.Dir)
	}
	cfg, err := engine.LoadConfig(out.Dir)
	if err != nil {
		return nil, invalidf("model %q: %v", ref, err)
	}
	out.MaxContext = cfg.MaxPositionEmbeddings
	return out, nil
}

func isPath(ref string) bool {
	return filepath.IsAbs(ref) || strings.HasPrefix(ref, ".") || strings.HasPrefix(ref, "~") ||
		strings.Count(ref, "/") > 1 || strings.ContainsRune(ref, filepath.Separator) && !hfIDRE.MatchString(ref)
}

// hfSnapshot finds hub/models--org--name/refs/main → snapshots/<hash>.
func (r *Resolver) hfSnapshot(id string) (string, error) {
	snap, err := hfcache.Snapshot(r.hfHome, hfcache.Models, id)
	repo := hfcache.Entry(r.hfHome, hfcache.Models, id)
	switch {
	case errors.Is(err, hfcache.ErrNotCached):
		return "", invalidf("model %q: not in the local Hugging Face cache (%s); download it first, e.g. huggingface-cli download %s", id, repo, id)
	case err != nil:
		return "", invalidf("model %q: malformed %s", id, filepath.Join(repo, "refs", "main"))
	}
	return snap, nil
}
