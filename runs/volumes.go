package runs

import (
	"errors"
	"path/filepath"

	"hone/catalog"
	"hone/store"
	"hone/tabular"
)

// resolvePath confines a request path: a catalog volume path
// (/Volumes/..., dbfs:/Volumes/...) to its volume, a Hugging Face dataset
// id in the local cache to its cache entry, any other path to the data
// roots. Either way the result is a real, symlink-free local path.
func (s *Service) resolvePath(p string) (string, error) {
	if !catalog.IsVolumePath(p) {
		real, err := confine(s.roots, p)
		if err == nil || s.models == nil {
			return real, err
		}
		// Not a file under the roots: a Hugging Face dataset id in the
		// local cache resolves to its snapshot, confined to its cache entry.
		snap, entry, ok, herr := tabular.CachedDataset(p, s.models.HFHome())
		if !ok {
			return "", err
		}
		if herr != nil {
			return "", invalidf("%v (%v)", err, herr)
		}
		if entry, herr = filepath.EvalSymlinks(entry); herr != nil {
			return "", invalidf("%v", herr)
		}
		return confineIn([]string{entry}, "its Hugging Face cache entry", snap)
	}
	real, err := s.cat.VolumePath(p)
	if errors.Is(err, catalog.ErrInvalid) || errors.Is(err, store.ErrNotFound) {
		return "", invalidf("%v", err)
	}
	return real, err
}
