package runs

import (
	"errors"

	"hone/catalog"
	"hone/store"
)

// resolvePath confines a request path: a catalog volume path
// (/Volumes/..., dbfs:/Volumes/...) to its volume, any other path to the
// data roots. Either way the result is a real, symlink-free local path.
func (s *Service) resolvePath(p string) (string, error) {
	if !catalog.IsVolumePath(p) {
		return confine(s.roots, p)
	}
	real, err := s.cat.VolumePath(p)
	if errors.Is(err, catalog.ErrInvalid) || errors.Is(err, store.ErrNotFound) {
		return "", invalidf("%v", err)
	}
	return real, err
}
