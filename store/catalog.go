package store

import (
	"context"
	"fmt"
	"time"
)

// Catalog is the top level of model names.
type Catalog struct {
	Name      string
	Comment   string
	CreatedAt time.Time
}

// Schema is the second level of model names.
type Schema struct {
	Catalog, Name string
	Comment       string
	CreatedAt     time.Time
}

// Model is a registered model; its versions hold the weights.
type Model struct {
	Catalog, Schema, Name string
	CreatedAt             time.Time
}

// ModelVersion is one registered, complete HF-format model directory.
type ModelVersion struct {
	Catalog, Schema, Model string
	Version                int
	StorageLocation        string
	Run                    string // lineage: the run that produced it ("" if imported)
	BaseModel              string
	DataFingerprint        string
	Metrics                string // JSON object
	License                string
	CreatedAt              time.Time
	Aliases                []string
}

// CreateCatalog creates a catalog; ErrExists if it exists.
func (o ops) CreateCatalog(ctx context.Context, c Catalog) error {
	n, err := o.q.exec(ctx, `INSERT INTO hone_catalogs (name, comment, created_at) VALUES (?,?,?)
		ON CONFLICT (name) DO NOTHING`, c.Name, c.Comment, micros(c.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: create catalog %s: %w", c.Name, err)
	}
	if n == 0 {
		return fmt.Errorf("catalog %s: %w", c.Name, ErrExists)
	}
	return nil
}

// GetCatalog reads a catalog.
func (o ops) GetCatalog(ctx context.Context, name string) (*Catalog, error) {
	c := Catalog{Name: name}
	var t int64
	if err := o.one(ctx, `SELECT comment, created_at FROM hone_catalogs WHERE name = ?`, []any{name}, &c.Comment, &t); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", name, err)
	}
	c.CreatedAt = fromMicros(t)
	return &c, nil
}

// ListCatalogs returns all catalogs by name.
func (o ops) ListCatalogs(ctx context.Context) ([]Catalog, error) {
	var out []Catalog
	err := o.all(ctx, `SELECT name, comment, created_at FROM hone_catalogs ORDER BY name`, nil, func(r rows) error {
		var c Catalog
		var t int64
		err := r.Scan(&c.Name, &c.Comment, &t)
		c.CreatedAt = fromMicros(t)
		out = append(out, c)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list catalogs: %w", err)
	}
	return out, nil
}

// CreateSchema creates a schema in an existing catalog.
func (o ops) CreateSchema(ctx context.Context, s Schema) error {
	if _, err := o.GetCatalog(ctx, s.Catalog); err != nil {
		return err
	}
	n, err := o.q.exec(ctx, `INSERT INTO hone_schemas (catalog, name, comment, created_at) VALUES (?,?,?,?)
		ON CONFLICT (catalog, name) DO NOTHING`, s.Catalog, s.Name, s.Comment, micros(s.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: create schema %s.%s: %w", s.Catalog, s.Name, err)
	}
	if n == 0 {
		return fmt.Errorf("schema %s.%s: %w", s.Catalog, s.Name, ErrExists)
	}
	return nil
}

// GetSchema reads a schema.
func (o ops) GetSchema(ctx context.Context, catalog, name string) (*Schema, error) {
	s := Schema{Catalog: catalog, Name: name}
	var t int64
	if err := o.one(ctx, `SELECT comment, created_at FROM hone_schemas WHERE catalog = ? AND name = ?`,
		[]any{catalog, name}, &s.Comment, &t); err != nil {
		return nil, fmt.Errorf("schema %s.%s: %w", catalog, name, err)
	}
	s.CreatedAt = fromMicros(t)
	return &s, nil
}

// ListSchemas returns a catalog's schemas by name.
func (o ops) ListSchemas(ctx context.Context, catalog string) ([]Schema, error) {
	var out []Schema
	err := o.all(ctx, `SELECT name, comment, created_at FROM hone_schemas WHERE catalog = ? ORDER BY name`,
		[]any{catalog}, func(r rows) error {
			s := Schema{Catalog: catalog}
			var t int64
			err := r.Scan(&s.Name, &s.Comment, &t)
			s.CreatedAt = fromMicros(t)
			out = append(out, s)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("store: list schemas: %w", err)
	}
	return out, nil
}

// GetModel reads a model.
func (o ops) GetModel(ctx context.Context, catalog, schema, name string) (*Model, error) {
	m := Model{Catalog: catalog, Schema: schema, Name: name}
	var t int64
	if err := o.one(ctx, `SELECT created_at FROM hone_models WHERE catalog = ? AND schema_name = ? AND name = ?`,
		[]any{catalog, schema, name}, &t); err != nil {
		return nil, fmt.Errorf("model %s.%s.%s: %w", catalog, schema, name, err)
	}
	m.CreatedAt = fromMicros(t)
	return &m, nil
}

// ListModels returns a schema's models by name.
func (o ops) ListModels(ctx context.Context, catalog, schema string) ([]Model, error) {
	var out []Model
	err := o.all(ctx, `SELECT name, created_at FROM hone_models WHERE catalog = ? AND schema_name = ? ORDER BY name`,
		[]any{catalog, schema}, func(r rows) error {
			m := Model{Catalog: catalog, Schema: schema}
			var t int64
			err := r.Scan(&m.Name, &t)
			m.CreatedAt = fromMicros(t)
			out = append(out, m)
			return err
		})
	if err != nil {
		return nil, fmt.Errorf("store: list models: %w", err)
	}
	return out, nil
}

// AddModelVersion registers v as the model's next version (creating the
// model if needed; its schema must exist) and returns the version number.
// Use it inside a transaction so the number is not raced.
func (o ops) AddModelVersion(ctx context.Context, v ModelVersion) (int, error) {
	if _, err := o.GetSchema(ctx, v.Catalog, v.Schema); err != nil {
		return 0, err
	}
	if _, err := o.q.exec(ctx, `INSERT INTO hone_models (catalog, schema_name, name, created_at) VALUES (?,?,?,?)
		ON CONFLICT (catalog, schema_name, name) DO NOTHING`, v.Catalog, v.Schema, v.Model, micros(v.CreatedAt)); err != nil {
		return 0, fmt.Errorf("store: create model: %w", err)
	}
	var next int
	if err := o.one(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM hone_model_versions
		WHERE catalog = ? AND schema_name = ? AND model = ?`, []any{v.Catalog, v.Schema, v.Model}, &next); err != nil {
		return 0, fmt.Errorf("store: next version: %w", err)
	}
	if v.Version == 0 {
		v.Version = next
	} else if v.Version < next {
		return 0, fmt.Errorf("model %s.%s.%s version %d: %w", v.Catalog, v.Schema, v.Model, v.Version, ErrExists)
	}
	if v.Metrics == "" {
		v.Metrics = "{}"
	}
	n, err := o.q.exec(ctx, `INSERT INTO hone_model_versions (catalog, schema_name, model, version, storage_location,
		run_name, base_model, data_fingerprint, metrics, license, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (catalog, schema_name, model, version) DO NOTHING`,
		v.Catalog, v.Schema, v.Model, v.Version, v.StorageLocation, v.Run, v.BaseModel, v.DataFingerprint,
		v.Metrics, v.License, micros(v.CreatedAt))
	if err != nil {
		return 0, fmt.Errorf("store: add model version: %w", err)
	}
	if n == 0 {
		return 0, fmt.Errorf("model %s.%s.%s version %d: %w", v.Catalog, v.Schema, v.Model, v.Version, ErrExists)
	}
	return v.Version, nil
}

const versionCols = `version, storage_location, run_name, base_model, data_fingerprint, metrics, license, created_at`

// ListModelVersions returns the model's versions in order, with aliases.
func (o ops) ListModelVersions(ctx context.Context, catalog, schema, model string) ([]ModelVersion, error) {
	if _, err := o.GetModel(ctx, catalog, schema, model); err != nil {
		return nil, err
	}
	var out []ModelVersion
	err := o.all(ctx, `SELECT `+versionCols+` FROM hone_model_versions WHERE catalog = ? AND schema_name = ? AND model = ?
		ORDER BY version`, []any{catalog, schema, model}, func(r rows) error {
		v := ModelVersion{Catalog: catalog, Schema: schema, Model: model}
		var t int64
		err := r.Scan(&v.Version, &v.StorageLocation, &v.Run, &v.BaseModel, &v.DataFingerprint, &v.Metrics, &v.License, &t)
		v.CreatedAt = fromMicros(t)
		out = append(out, v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list versions: %w", err)
	}
	aliases := map[int][]string{}
	err = o.all(ctx, `SELECT alias, version FROM hone_model_aliases WHERE catalog = ? AND schema_name = ? AND model = ?
		ORDER BY alias`, []any{catalog, schema, model}, func(r rows) error {
		var a string
		var v int
		err := r.Scan(&a, &v)
		aliases[v] = append(aliases[v], a)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list aliases: %w", err)
	}
	for i := range out {
		out[i].Aliases = aliases[out[i].Version]
		if out[i].Aliases == nil {
			out[i].Aliases = []string{}
		}
	}
	return out, nil
}

// GetModelVersion reads one version (with its aliases).
func (o ops) GetModelVersion(ctx context.Context, catalog, schema, model string, version int) (*ModelVersion, error) {
	vs, err := o.ListModelVersions(ctx, catalog, schema, model)
	if err != nil {
		return nil, err
	}
	for i := range vs {
		if vs[i].Version == version {
			return &vs[i], nil
		}
	}
	return nil, fmt.Errorf("model %s.%s.%s version %d: %w", catalog, schema, model, version, ErrNotFound)
}

// ResolveAlias returns the version an alias points at.
func (o ops) ResolveAlias(ctx context.Context, catalog, schema, model, alias string) (int, error) {
	var v int
	if err := o.one(ctx, `SELECT version FROM hone_model_aliases WHERE catalog = ? AND schema_name = ? AND model = ?
		AND alias = ?`, []any{catalog, schema, model, alias}, &v); err != nil {
		return 0, fmt.Errorf("model %s.%s.%s alias %s: %w", catalog, schema, model, alias, err)
	}
	return v, nil
}

// SetAlias points alias at an existing version (moving it if set).
func (o ops) SetAlias(ctx context.Context, catalog, schema, model, alias string, version int) error {
	var one int
	if err := o.one(ctx, `SELECT 1 FROM hone_model_versions WHERE catalog = ? AND schema_name = ? AND model = ? AND version = ?`,
		[]any{catalog, schema, model, version}, &one); err != nil {
		return fmt.Errorf("model %s.%s.%s version %d: %w", catalog, schema, model, version, err)
	}
	_, err := o.q.exec(ctx, `INSERT INTO hone_model_aliases (catalog, schema_name, model, alias, version) VALUES (?,?,?,?,?)
		ON CONFLICT (catalog, schema_name, model, alias) DO UPDATE SET version = excluded.version`,
		catalog, schema, model, alias, version)
	if err != nil {
		return fmt.Errorf("store: set alias: %w", err)
	}
	return nil
}

// RemoveAlias deletes an alias; ErrNotFound if it is not set.
func (o ops) RemoveAlias(ctx context.Context, catalog, schema, model, alias string) error {
	n, err := o.q.exec(ctx, `DELETE FROM hone_model_aliases WHERE catalog = ? AND schema_name = ? AND model = ? AND alias = ?`,
		catalog, schema, model, alias)
	if err != nil {
		return fmt.Errorf("store: remove alias: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("model %s.%s.%s alias %s: %w", catalog, schema, model, alias, ErrNotFound)
	}
	return nil
}
