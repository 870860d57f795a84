package tabular

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"hone/internal/hfcache"
)

// splitFileRE takes the split from a data file name as the Hugging Face hub
// does: train-00000-of-00003.parquet, train-00000-of-00003-<hash>.parquet
// and train.parquet are all of split "train".
var splitFileRE = regexp.MustCompile(`^([A-Za-z0-9_]+)(?:[-.].*)?\.parquet$`)

// hfSplits maps the splits of a Hugging Face dataset folder to their files:
// data/<split>-*.parquet, data/<split>/*.parquet, <split>/*.parquet, and
// <config>/<split>/*.parquet (keyed "config/split").
func hfSplits(dir string) map[string][]string {
	splits := map[string][]string{}
	data := filepath.Join(dir, "data")
	if fi, err := os.Stat(data); err == nil && fi.IsDir() {
		for _, f := range parquetFiles(data) {
			if m := splitFileRE.FindStringSubmatch(filepath.Base(f)); m != nil {
				splits[m[1]] = append(splits[m[1]], f)
			}
		}
		addSubdirs(splits, data, "")
		return splits
	}
	addSubdirs(splits, dir, "")
	if len(splits) > 0 {
		return splits
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			addSubdirs(splits, filepath.Join(dir, e.Name()), e.Name()+"/")
		}
	}
	return splits
}

// addSubdirs adds each subfolder of dir that holds Parquet files as a split.
func addSubdirs(splits map[string][]string, dir, prefix string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			if fs := parquetFiles(filepath.Join(dir, e.Name())); len(fs) > 0 {
				splits[prefix+e.Name()] = append(splits[prefix+e.Name()], fs...)
			}
		}
	}
}

// pickSplit finds split among splits: exactly, or as "<config>/split" when
// one config has it or the config is "default".
func pickSplit(splits map[string][]string, split string) ([]string, string, error) {
	if fs, ok := splits[split]; ok {
		return fs, split, nil
	}
	if fs, ok := splits["default/"+split]; ok {
		return fs, "default/" + split, nil
	}
	var matches []string
	for k := range splits {
		if strings.HasSuffix(k, "/"+split) {
			matches = append(matches, k)
		}
	}
	slices.Sort(matches)
	if len(matches) == 1 {
		return splits[matches[0]], matches[0], nil
	}
	names := make([]string, 0, len(splits))
	for k := range splits {
		names = append(names, k)
	}
	slices.Sort(names)
	if len(matches) > 1 {
		return nil, "", fmt.Errorf("split %q is in several configs (%s): name one, e.g. --split %s", split, strings.Join(matches, ", "), matches[0])
	}
	return nil, "", fmt.Errorf("no split %q (the dataset has: %s); choose one with --split", split, strings.Join(names, ", "))
}

func openHF(path, dir string, opt Options) (*Table, error) {
	splits := hfSplits(dir)
	if len(splits) == 0 {
		return nil, fmt.Errorf("tabular: %s: not a Hugging Face dataset folder: no data/<split>-*.parquet, <split>/*.parquet or <config>/<split>/*.parquet files", path)
	}
	// Split may list alternatives, "validation,test": the first present.
	var files []string
	var split string
	var err error
	for _, alt := range strings.Split(opt.Split, ",") {
		if files, split, err = pickSplit(splits, strings.TrimSpace(alt)); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("tabular: %s: %w", path, err)
	}
	t := &Table{Kind: KindHuggingFace, Path: path, Version: -1, Split: split}
	for _, f := range files {
		t.Files = append(t.Files, File{Path: f})
	}
	return t, nil
}

// CachedDataset finds a Hugging Face dataset id (org/name) in the local hub
// cache of home ("" = $HF_HOME, else ~/.cache/huggingface): the snapshot
// folder refs/main names, and the dataset's cache entry (whose blobs the
// snapshot's files link to). ok is false when id is not shaped as an id.
func CachedDataset(id, home string) (snapshot, entry string, ok bool, err error) {
	if !hfIDRE.MatchString(id) {
		return "", "", false, nil
	}
	snapshot, err = hfCached(id, home)
	if err != nil {
		return "", "", true, err
	}
	return snapshot, filepath.Dir(filepath.Dir(snapshot)), true, nil
}

// hfCached finds a dataset id (org/name) in the hub cache:
// hub/datasets--org--name/refs/main → snapshots/<commit>.
func hfCached(id, home string) (string, error) {
	if !hfIDRE.MatchString(id) {
		return "", fmt.Errorf("tabular: %q is not a Hugging Face dataset id", id)
	}
	home, err := hfcache.Home(home)
	if err != nil {
		return "", fmt.Errorf("tabular: %w", err)
	}
	snap, err := hfcache.Snapshot(home, hfcache.Datasets, id)
	repo := hfcache.Entry(home, hfcache.Datasets, id)
	switch {
	case errors.Is(err, hfcache.ErrNotCached):
		return "", fmt.Errorf("tabular: dataset %q is not a local path nor in the Hugging Face cache (%s); download it first, e.g. huggingface-cli download --repo-type dataset %s", id, repo, id)
	case err != nil:
		return "", fmt.Errorf("tabular: dataset %q: malformed %s", id, filepath.Join(repo, "refs", "main"))
	}
	return snap, nil
}
