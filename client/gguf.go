package client

import (
	"context"
	"net/http"
	"net/url"
)

// RegisterGGUFRequest names a GGUF file hone export wrote, under the
// server's data roots, to register as a model's next version.
type RegisterGGUFRequest struct {
	Path string `json:"path"`
}

// RegisterGGUF registers the GGUF file at path (on the server, under its
// data roots) as model's next version, served from its quantized matrices.
func (c *Client) RegisterGGUF(ctx context.Context, model, path string) (*Model, error) {
	var out Model
	return &out, c.do(ctx, http.MethodPost, "/api/catalog/models/"+url.PathEscape(model)+"/gguf", nil, RegisterGGUFRequest{Path: path}, &out)
}
