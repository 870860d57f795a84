package client

import (
	"context"
	"encoding/json"
)

// RunValidation is the answer of POST /api/runs/validate: whether
// CreateRun would accept the request, checked the same way, data included,
// without creating anything.
type RunValidation struct {
	OK bool `json:"ok"`
	// Error is why CreateRun would refuse the request: the field, or
	// file:line of the first bad records.
	Error string `json:"error,omitempty"`
	// Report is the data report (counts, packing, warnings, problems with
	// file:line), also present when the data is refused.
	Report json.RawMessage `json:"report,omitempty"`
	// Request is the request with the server's defaults filled in.
	Request CreateRunRequest `json:"request"`
}

// CatalogTree lists every catalog with its schemas and their models.
type CatalogTree struct {
	Catalogs []CatalogNode `json:"catalogs"`
}

// CatalogNode is a catalog and its schemas.
type CatalogNode struct {
	Name    string       `json:"name"`
	Comment string       `json:"comment,omitempty"`
	Schemas []SchemaNode `json:"schemas"`
}

// SchemaNode is a schema and the full names of its models.
type SchemaNode struct {
	Name    string   `json:"name"` // catalog.schema
	Comment string   `json:"comment,omitempty"`
	Models  []string `json:"models"` // catalog.schema.model
}

// ValidateRun checks req as CreateRun would without creating a run.
func (c *Client) ValidateRun(ctx context.Context, req CreateRunRequest) (*RunValidation, error) {
	var out RunValidation
	err := c.do(ctx, "POST", "/api/runs/validate", nil, req, &out)
	return &out, err
}

// CatalogTree lists catalogs, schemas and models.
func (c *Client) CatalogTree(ctx context.Context) (*CatalogTree, error) {
	var out CatalogTree
	err := c.do(ctx, "GET", "/api/catalog/tree", nil, nil, &out)
	return &out, err
}
