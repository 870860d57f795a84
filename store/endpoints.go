package store

import (
	"context"
	"fmt"
	"time"
)

// Endpoint is a serving endpoint: a name under which a model reference
// ("catalog.schema.model/N" or "catalog.schema.model@alias") answers.
// The reference is kept as written and resolved for each request, so an
// endpoint that follows an alias moves with it.
type Endpoint struct {
	Name      string
	Model     string
	CreatedAt time.Time
}

// CreateEndpoint stores a new endpoint; ErrExists if the name is taken.
func (o ops) CreateEndpoint(ctx context.Context, e Endpoint) error {
	n, err := o.q.exec(ctx, `INSERT INTO hone_endpoints (name, model, created_at) VALUES (?,?,?)
		ON CONFLICT (name) DO NOTHING`, e.Name, e.Model, micros(e.CreatedAt))
	if err != nil {
		return fmt.Errorf("store: create endpoint %s: %w", e.Name, err)
	}
	if n == 0 {
		return fmt.Errorf("endpoint %s: %w", e.Name, ErrExists)
	}
	return nil
}

// GetEndpoint reads an endpoint.
func (o ops) GetEndpoint(ctx context.Context, name string) (*Endpoint, error) {
	e := Endpoint{Name: name}
	var t int64
	if err := o.one(ctx, `SELECT model, created_at FROM hone_endpoints WHERE name = ?`, []any{name}, &e.Model, &t); err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", name, err)
	}
	e.CreatedAt = fromMicros(t)
	return &e, nil
}

// DeleteEndpoint removes an endpoint (never its model); ErrNotFound if
// there is none of that name.
func (o ops) DeleteEndpoint(ctx context.Context, name string) error {
	n, err := o.q.exec(ctx, `DELETE FROM hone_endpoints WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("store: delete endpoint %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("endpoint %s: %w", name, ErrNotFound)
	}
	return nil
}

// PageEndpoints returns one page of the endpoints by name.
func (o ops) PageEndpoints(ctx context.Context, p Page) ([]Endpoint, string, error) {
	var after string
	if err := decodeCursor("endpoints", p.Token, &after); err != nil {
		return nil, "", err
	}
	out := []Endpoint{}
	err := o.all(ctx, `SELECT name, model, created_at FROM hone_endpoints WHERE name > ? ORDER BY name`+limitSQL(p.size()+1),
		[]any{after}, func(r rows) error {
			var e Endpoint
			var t int64
			err := r.Scan(&e.Name, &e.Model, &t)
			e.CreatedAt = fromMicros(t)
			out = append(out, e)
			return err
		})
	if err != nil {
		return nil, "", fmt.Errorf("store: list endpoints: %w", err)
	}
	out, more := cut(out, p.size())
	if !more {
		return out, "", nil
	}
	return out, encodeCursor("endpoints", out[len(out)-1].Name), nil
}
