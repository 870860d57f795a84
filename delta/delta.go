// Package delta reads the snapshot of a Delta Lake table from its
// transaction log (_delta_log/), following the Delta protocol
// (github.com/delta-io/delta/blob/master/PROTOCOL.md): the newest checkpoint
// at or before the wanted version (a single Parquet file or all parts of a
// multi-part one), then the JSON commits after it in order, replaying add
// and remove actions by path. It returns the live data files with their
// partition values and the table's schema with column-mapping physical
// names; reading the Parquet files themselves is the caller's business.
//
// Supported: reader versions 1 and 2 (column mapping by name or id), and
// reader version 3 with the reader features in supportedFeatures. Anything
// else is refused with the version or feature named, never read wrongly:
// deletion vectors, for one, would silently bring back deleted rows.
//
// Data file paths are relative URIs (URL-encoded) or absolute file: URIs;
// every one must resolve, symlinks followed, inside the table folder, so a
// table confined to a directory cannot make the reader open files outside
// it. Load is safe for concurrent use (it shares nothing).
package delta

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ErrUnsupported marks a table this reader refuses (a protocol version or
// feature it does not implement).
var ErrUnsupported = errors.New("delta: unsupported table")

// maxReaderVersion is the newest reader protocol version understood.
const maxReaderVersion = 3

// supportedFeatures are the reader features of protocol version 3 this
// reader honours: column mapping is applied, the others change nothing for
// reading the live files.
var supportedFeatures = []string{"columnMapping", "timestampNtz", "vacuumProtocolCheck", "typeWidening", "typeWidening-preview"}

// Snapshot is a table at one version.
type Snapshot struct {
	Dir     string
	Version int64
	// Files are the live data files in path order (the table has no row
	// order; path order makes every read of a version the same).
	Files []File
	// Fields are the table's top-level columns.
	Fields []Field
	// PartitionColumns are the logical names of the partition columns.
	PartitionColumns []string
}

// File is one live data file.
type File struct {
	Path string // local absolute path
	// Partition holds the partition values by logical column name, as the
	// log writes them (strings; nil for null).
	Partition map[string]*string
}

// Field is a column of the table schema. For nested types Fields (struct)
// or Element (array element, map value) describe the children.
type Field struct {
	Name string
	// Physical is the column's name in the Parquet files: the name, or the
	// column-mapping physical name.
	Physical string
	// Type is the primitive type name ("string", "long", ...) or "struct",
	// "array", "map".
	Type    string
	Fields  []Field
	Element *Field
}

var (
	commitRE     = regexp.MustCompile(`^(\d{20})\.json$`)
	checkpointRE = regexp.MustCompile(`^(\d{20})\.checkpoint\.parquet$`)
	multipartRE  = regexp.MustCompile(`^(\d{20})\.checkpoint\.(\d{10})\.(\d{10})\.parquet$`)
)

// IsTable reports whether dir holds a Delta table (a _delta_log folder).
func IsTable(dir string) bool {
	fi, err := os.Stat(filepath.Join(dir, "_delta_log"))
	return err == nil && fi.IsDir()
}

// logListing is what _delta_log holds.
type logListing struct {
	commits     map[int64]string
	checkpoints map[int64][]string // version → part files, in part order
	latest      int64
}

func listLog(logDir string) (logListing, error) {
	ents, err := os.ReadDir(logDir)
	if err != nil {
		return logListing{}, fmt.Errorf("delta: read log: %w", err)
	}
	l := logListing{commits: map[int64]string{}, checkpoints: map[int64][]string{}, latest: -1}
	parts := map[int64]map[int64]string{}
	totals := map[int64]int64{}
	for _, e := range ents {
		name := e.Name()
		if m := commitRE.FindStringSubmatch(name); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			l.commits[v] = filepath.Join(logDir, name)
			l.latest = max(l.latest, v)
		} else if m := checkpointRE.FindStringSubmatch(name); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			l.checkpoints[v] = []string{filepath.Join(logDir, name)}
		} else if m := multipartRE.FindStringSubmatch(name); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			part, _ := strconv.ParseInt(m[2], 10, 64)
			n, _ := strconv.ParseInt(m[3], 10, 64)
			if parts[v] == nil {
				parts[v] = map[int64]string{}
			}
			parts[v][part] = filepath.Join(logDir, name)
			totals[v] = n
		}
	}
	// A multi-part checkpoint counts only when every part is there (a
	// writer may have died half-way).
	for v, ps := range parts {
		if _, single := l.checkpoints[v]; single || int64(len(ps)) != totals[v] {
			continue
		}
		files := make([]string, 0, len(ps))
		for i := int64(1); i <= totals[v]; i++ {
			if ps[i] == "" {
				break
			}
			files = append(files, ps[i])
		}
		if int64(len(files)) == totals[v] {
			l.checkpoints[v] = files
		}
	}
	for v := range l.checkpoints {
		l.latest = max(l.latest, v)
	}
	return l, nil
}

// Load reads the snapshot of the table in dir at version (latest when
// version < 0).
func Load(ctx context.Context, dir string, version int64) (*Snapshot, error) {
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	if realDir, err = filepath.Abs(realDir); err != nil {
		return nil, fmt.Errorf("delta: %w", err)
	}
	logDir := filepath.Join(realDir, "_delta_log")
	l, err := listLog(logDir)
	if err != nil {
		return nil, err
	}
	if l.latest < 0 {
		return nil, fmt.Errorf("delta: %s: the log holds no commit", logDir)
	}
	target := l.latest
	if version >= 0 {
		if version > l.latest {
			return nil, fmt.Errorf("delta: %s: version %d does not exist (the latest is %d)", dir, version, l.latest)
		}
		target = version
	}
	r := &replay{dir: realDir, live: map[string]addAction{}}
	start := int64(0)
	if cp, ok := newestCheckpoint(l, target); ok {
		for _, part := range l.checkpoints[cp] {
			if err := r.checkpoint(ctx, part); err != nil {
				return nil, err
			}
		}
		start = cp + 1
	}
	for v := start; v <= target; v++ {
		f, ok := l.commits[v]
		if !ok {
			return nil, fmt.Errorf("delta: %s: version %d cannot be read: commit %020d.json is missing from the log (cleaned up?) and no checkpoint covers it", dir, target, v)
		}
		if err := r.commit(ctx, f); err != nil {
			return nil, err
		}
	}
	return r.snapshot(target)
}

func newestCheckpoint(l logListing, target int64) (int64, bool) {
	best, ok := int64(-1), false
	for v := range l.checkpoints {
		if v <= target && v > best {
			best, ok = v, true
		}
	}
	return best, ok
}

// resolvePath turns an add/remove path into a local path inside dir.
func resolvePath(dir, p string) (string, error) {
	u, err := url.Parse(p)
	if err != nil {
		return "", fmt.Errorf("data file path %q: %w", p, err)
	}
	var local string
	switch u.Scheme {
	case "":
		rel, err := url.PathUnescape(p)
		if err != nil {
			return "", fmt.Errorf("data file path %q: %w", p, err)
		}
		local = filepath.Join(dir, filepath.FromSlash(rel))
	case "file":
		local = filepath.FromSlash(u.Path)
	default:
		return "", fmt.Errorf("data file %q is not on the local file system (scheme %s): copy the table here first", p, u.Scheme)
	}
	real, err := filepath.EvalSymlinks(local)
	if err != nil {
		return "", fmt.Errorf("data file %q: %w", p, err)
	}
	if !strings.HasPrefix(real, dir+string(filepath.Separator)) {
		return "", fmt.Errorf("data file %q lies outside the table folder %s: refused", p, dir)
	}
	return real, nil
}

func (r *replay) snapshot(version int64) (*Snapshot, error) {
	if r.protocol == nil {
		return nil, fmt.Errorf("delta: %s: the log has no protocol action", r.dir)
	}
	if err := r.protocol.check(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnsupported, r.dir, err)
	}
	if r.meta == nil {
		return nil, fmt.Errorf("delta: %s: the log has no metaData action", r.dir)
	}
	fields, err := r.meta.fields()
	if err != nil {
		return nil, fmt.Errorf("delta: %s: %w", r.dir, err)
	}
	logical := map[string]string{} // physical → logical, for partition values
	for _, f := range fields {
		logical[f.Physical] = f.Name
	}
	s := &Snapshot{Dir: r.dir, Version: version, Fields: fields, PartitionColumns: r.meta.PartitionColumns}
	keys := make([]string, 0, len(r.live))
	for k := range r.live {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		add := r.live[k]
		if len(add.DeletionVector) > 0 && string(add.DeletionVector) != "null" {
			return nil, fmt.Errorf("%w: %s: data file %s has a deletion vector (reader feature \"deletionVectors\"), which hone does not apply", ErrUnsupported, r.dir, add.Path)
		}
		local, err := resolvePath(r.dir, add.Path)
		if err != nil {
			return nil, fmt.Errorf("delta: %s: %w", r.dir, err)
		}
		part := map[string]*string{}
		for k, v := range add.PartitionValues {
			if name, ok := logical[k]; ok {
				k = name
			}
			part[k] = v
		}
		s.Files = append(s.Files, File{Path: local, Partition: part})
	}
	return s, nil
}
