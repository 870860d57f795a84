package runs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// resolveRoots makes each data root absolute and symlink-free.
func resolveRoots(roots []string) ([]string, error) {
	out := make([]string, 0, len(roots))
	for _, r := range roots {
		abs, err := filepath.Abs(r)
		if err != nil {
			return nil, fmt.Errorf("runs: data root %s: %w", r, err)
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil, fmt.Errorf("runs: data root %s: %w", r, err)
		}
		out = append(out, real)
	}
	return out, nil
}

// confine resolves p (relative paths against the first root), follows
// every symlink, and accepts it only if the real path lies inside a root.
// So neither ".." nor a symlink can reach outside the roots.
func confine(roots []string, p string) (string, error) {
	if p == "" {
		return "", invalidf("path is empty")
	}
	if len(roots) == 0 {
		return "", invalidf("path %s: no data roots are configured", p)
	}
	abs := p
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(roots[0], abs)
	}
	abs = filepath.Clean(abs)
	// Lexically outside: refuse before touching the file system, so the
	// answer does not reveal what exists outside the roots.
	if !inside(roots, abs) {
		return "", invalidf("path %s is outside the server's data roots (%s)", p, strings.Join(roots, ", "))
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if os.IsNotExist(err) {
			return "", invalidf("path %s does not exist", p)
		}
		return "", invalidf("path %s: %v", p, err)
	}
	if inside(roots, real) {
		return real, nil
	}
	return "", invalidf("path %s is outside the server's data roots (%s)", p, strings.Join(roots, ", "))
}

func inside(roots []string, p string) bool {
	for _, r := range roots {
		if p == r || strings.HasPrefix(p, r+string(filepath.Separator)) {
			return true
		}
	}
	return false
}
