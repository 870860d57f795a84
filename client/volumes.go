package client

import (
	"context"
	"io"
	"net/http"
	"path"
	"strings"
	"time"
)

// CreateVolumeRequest creates a catalog volume.
type CreateVolumeRequest struct {
	Name string `json:"name"` // catalog.schema.volume
}

// Volume is a catalog volume.
type Volume struct {
	Name string `json:"name"`
}

// VolumeEntry is a file or folder in a volume.
type VolumeEntry struct {
	Name     string    `json:"name"`
	Path     string    `json:"path"` // /Volumes/<catalog>/<schema>/<volume>/...
	IsDir    bool      `json:"is_dir"`
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
}

// VolumeListing is the content of a volume folder.
type VolumeListing struct {
	Entries []VolumeEntry `json:"entries"`
}

// CreateVolume makes a managed folder catalog.schema.volume, addressed as
// /Volumes/<catalog>/<schema>/<volume>/.
func (c *Client) CreateVolume(ctx context.Context, name string) (*Volume, error) {
	var out Volume
	return &out, c.do(ctx, http.MethodPost, "/api/catalog/volumes", nil, CreateVolumeRequest{Name: name}, &out)
}

// volumeAPIPath maps /Volumes/... (or dbfs:/Volumes/...) to an API path,
// cleaned, since the server redirects a path holding "..".
func volumeAPIPath(api, p string) string {
	p = path.Clean("/" + strings.TrimPrefix(p, "dbfs:"))
	return api + "/Volumes/" + strings.TrimPrefix(p, "/Volumes/")
}

// PutFile uploads r to the volume path p (replacing any file there).
func (c *Client) PutFile(ctx context.Context, p string, r io.Reader) (*VolumeEntry, error) {
	var out VolumeEntry
	return &out, c.do(ctx, http.MethodPut, volumeAPIPath("/api/fs/files", p), nil, r, &out)
}

// ListVolume lists the volume folder at p (or the file itself).
func (c *Client) ListVolume(ctx context.Context, p string) ([]VolumeEntry, error) {
	var out VolumeListing
	err := c.do(ctx, http.MethodGet, volumeAPIPath("/api/fs/directories", strings.TrimSuffix(p, "/")), nil, nil, &out)
	return out.Entries, err
}
