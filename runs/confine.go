package runs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"hone/modelref"
)

// DefaultDataRoots are the data roots when none are configured: home/data
// (created if missing), preceded by the working directory unless that is
// the user's home directory or / (which hold far more than training data:
// keys, credentials, other people's files).
func DefaultDataRoots(home string) ([]string, error) {
	data := filepath.Join(home, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, fmt.Errorf("runs: default data root: %w", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("runs: default data roots: %w", err)
	}
	if tooBroadRoot(wd) {
		return []string{data}, nil
	}
	return []string{wd, data}, nil
}

// tooBroadRoot reports whether dir is / or the user's home directory.
func tooBroadRoot(dir string) bool {
	real := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return filepath.Clean(p)
	}
	d := real(dir)
	if d == string(filepath.Separator) {
		return true
	}
	home, err := os.UserHomeDir()
	return err == nil && home != "" && d == real(home)
}

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
	return confineIn(roots, "the server's data roots", p)
}

// confineIn is confine with the roots named by label in errors.
func confineIn(roots []string, label, p string) (string, error) {
	if p == "" {
		return "", invalidf("path is empty")
	}
	if len(roots) == 0 {
		return "", invalidf("path %s: %s are not configured", p, label)
	}
	abs := p
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(roots[0], abs)
	}
	abs = filepath.Clean(abs)
	// Lexically outside: refuse before touching the file system, so the
	// answer does not reveal what exists outside the roots.
	if !inside(roots, abs) {
		return "", invalidf("path %s is outside %s (%s)", p, label, strings.Join(roots, ", "))
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
	name := p
	if abs != p {
		name = fmt.Sprintf("%s (%s)", p, abs)
	}
	return "", invalidf("path %s resolves to %s, outside %s (%s)", name, real, label, strings.Join(roots, ", "))
}

func inside(roots []string, p string) bool {
	for _, r := range roots {
		if p == r || strings.HasPrefix(p, r+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// confineDir confines dir and every entry in it (config.json,
// tokenizer.json, *.safetensors, ...), so no file of a model directory is
// a symlink out of the roots.
func confineDir(roots []string, label, dir string) error {
	if _, err := confineIn(roots, label, dir); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return invalidf("read %s: %v", dir, err)
	}
	for _, e := range entries {
		if _, err := confineIn(roots, label, filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// confineModel confines a resolved model's directory and files: a local
// directory to the data roots, a Hugging Face cache snapshot to its repo
// in the cache (whose files are links into its blobs), a catalog version to
// its own directory.
func (s *Service) confineModel(m *modelref.Resolved) error {
	roots, label := s.roots, "the server's data roots"
	switch m.Source {
	case "hf-cache":
		label = "its Hugging Face cache entry"
		roots = []string{filepath.Dir(filepath.Dir(m.Dir))} // repo/snapshots/<rev>
	case "catalog":
		label = "its catalog version directory"
		roots = []string{m.Dir}
	}
	if m.Source != "path" {
		var err error
		if roots, err = resolveRoots(roots); err != nil {
			return invalidf("model %s: %v", m.Ref, err)
		}
	}
	if err := confineDir(roots, label, m.Dir); err != nil {
		return invalidf("model: %v", err)
	}
	return nil
}

// confineParams confines every input path of a run again, as its worker
// is about to open them: a file replaced by a symlink out of the roots
// since the run was created is refused, naming it.
//
// This resolves every symlink and re-checks just before training (not an
// open-then-check on the descriptor the reader uses): the readers (dataset,
// engine, tokenizer) open by path, so a swap in the moment between this
// check and their open is not caught.
func (s *Service) confineParams(p *params) error {
	// The request's own paths are resolved again (a volume path through its
	// volume), and training reads what they resolve to now.
	for _, f := range []struct {
		field, path string
		real        *string
	}{{"train_data_path", p.Request.TrainDataPath, &p.Spec.TrainData}, {"eval_data_path", p.Request.EvalDataPath, &p.Spec.EvalData}} {
		if f.path == "" {
			continue
		}
		real, err := s.confineField(f.field, f.path)
		if err != nil {
			return err
		}
		*f.real = real
	}
	if w := p.Spec.InitWeights; w != "" {
		if err := confineDir(s.roots, "the server's data roots", w); err != nil {
			return invalidf("custom_weights_path: %v", err)
		}
	}
	return s.confineModel(&p.Model)
}
