package tabular

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"hone/delta"
)

// Kinds of table.
const (
	KindParquet     = "parquet"     // a .parquet file or a folder of them
	KindHuggingFace = "huggingface" // a Hugging Face dataset folder or cached id
	KindDelta       = "delta"       // a Delta table snapshot
)

// DefaultSplit is the split read from a Hugging Face dataset by default.
const DefaultSplit = "train"

// Options select what of a table is read.
type Options struct {
	// Split is the Hugging Face split (default "train"); "a,b" reads the
	// first of a and b the dataset has.
	Split string
	// Version is the Delta table version; negative means the latest.
	Version int64
	// HFHome is the Hugging Face home (default $HF_HOME, else
	// ~/.cache/huggingface); datasets are cached under HFHome/hub.
	HFHome string
}

// Table is the Parquet data behind a path.
type Table struct {
	Kind  string
	Path  string // as given
	Files []File
	// Version is the Delta version read (-1 for other kinds); Split the
	// Hugging Face split ("" for other kinds).
	Version int64
	Split   string
}

// File is one Parquet file of a table.
type File struct {
	Path string
	// Constant holds columns stored outside the file, by name (Delta
	// partition values; nil for null), typed by Types.
	Constant map[string]*string
	Types    map[string]string
	// Names maps the file's column names to the table's (Delta column
	// mapping); nil when they are the same.
	Names *names
}

// Detect reports whether path names table data rather than JSONL or text:
// a .parquet file, a folder with _delta_log/, .parquet files or a Hugging
// Face layout, or a Hugging Face dataset id present in the hub cache.
func Detect(path string, opt Options) bool {
	fi, err := os.Stat(path)
	if err != nil {
		_, err := hfCached(path, opt.HFHome)
		return err == nil
	}
	if !fi.IsDir() {
		return strings.EqualFold(filepath.Ext(path), ".parquet")
	}
	if delta.IsTable(path) || len(parquetFiles(path)) > 0 {
		return true
	}
	return len(hfSplits(path)) > 0
}

// Open resolves path to a table (see the package documentation).
func Open(ctx context.Context, path string, opt Options) (*Table, error) {
	if opt.Split == "" {
		opt.Split = DefaultSplit
	}
	fi, err := os.Stat(path)
	if err != nil {
		snap, herr := hfCached(path, opt.HFHome)
		if herr != nil {
			if os.IsNotExist(err) && hfIDRE.MatchString(path) {
				return nil, herr
			}
			return nil, fmt.Errorf("tabular: %w", err)
		}
		return openHF(path, snap, opt)
	}
	t := &Table{Path: path, Version: -1}
	switch {
	case !fi.IsDir():
		t.Kind, t.Files = KindParquet, []File{{Path: path}}
	case delta.IsTable(path):
		return openDelta(ctx, path, opt)
	case len(parquetFiles(path)) > 0:
		t.Kind = KindParquet
		for _, f := range parquetFiles(path) {
			t.Files = append(t.Files, File{Path: f})
		}
	default:
		return openHF(path, path, opt)
	}
	return t, nil
}

// parquetFiles lists dir's *.parquet files in name order (not recursive;
// hidden files, such as Spark's ._SUCCESS.crc, are skipped).
func parquetFiles(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() && !strings.HasPrefix(n, ".") && !strings.HasPrefix(n, "_") && strings.EqualFold(filepath.Ext(n), ".parquet") {
			out = append(out, filepath.Join(dir, n))
		}
	}
	slices.Sort(out)
	return out
}

func openDelta(ctx context.Context, path string, opt Options) (*Table, error) {
	snap, err := delta.Load(ctx, path, opt.Version)
	if err != nil {
		return nil, err
	}
	t := &Table{Kind: KindDelta, Path: path, Version: snap.Version}
	types := map[string]string{}
	for _, f := range snap.Fields {
		types[f.Name] = f.Type
	}
	nm := namesOf(snap.Fields)
	for _, f := range snap.Files {
		t.Files = append(t.Files, File{Path: f.Path, Constant: f.Partition, Types: types, Names: nm})
	}
	return t, nil
}

// names renames the columns of a file (physical → logical), level by level.
type names struct {
	fields map[string]nameNode
}

type nameNode struct {
	logical string
	sub     *names // struct fields of this column, or of its elements
}

// namesOf builds the renaming for Delta fields; nil when no name differs.
func namesOf(fields []Field) *names {
	n := &names{fields: map[string]nameNode{}}
	differs := false
	for _, f := range fields {
		node := nameNode{logical: f.Name}
		inner := f
		for inner.Element != nil {
			inner = *inner.Element
		}
		if node.sub = namesOf(inner.Fields); node.sub != nil {
			differs = true
		}
		if f.Physical != f.Name {
			differs = true
		}
		n.fields[f.Physical] = node
	}
	if !differs {
		return nil
	}
	return n
}

// Field is a column of a Delta schema.
type Field = delta.Field

var hfIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$`)
