package safetensors

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Hugging Face file names for model weights.
const (
	SingleFileName = "model.safetensors"
	IndexFileName  = "model.safetensors.index.json"
)

// Model is a Hugging Face model directory's weights, possibly sharded.
type Model struct {
	dir    string
	files  []*File          // one per shard, in open order
	byName map[string]*File // tensor name -> file holding it
	infos  []TensorInfo     // sorted by name
	meta   map[string]any   // index "metadata" (nil for a single file)
}

type indexJSON struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// OpenModel opens dir/model.safetensors if present, otherwise
// dir/model.safetensors.index.json and the shards it names. The single file
// wins when both exist, matching transformers' lookup order.
func OpenModel(dir string) (*Model, error) {
	single := filepath.Join(dir, SingleFileName)
	if _, err := os.Stat(single); err == nil {
		f, err := Open(single)
		if err != nil {
			return nil, err
		}
		m := &Model{dir: dir, files: []*File{f}, byName: map[string]*File{}, infos: f.infos}
		for _, t := range f.infos {
			m.byName[t.Name] = f
		}
		return m, nil
	}
	idxPath := filepath.Join(dir, IndexFileName)
	raw, err := os.ReadFile(idxPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, newErr(dir, "", ErrNotFound, "neither %s nor %s exists", SingleFileName, IndexFileName)
		}
		return nil, &Error{Path: idxPath, Kind: ErrFormat, Msg: "read index", Err: err}
	}
	var idx indexJSON
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, &Error{Path: idxPath, Kind: ErrFormat, Msg: "index is not valid JSON", Err: err}
	}
	if len(idx.WeightMap) == 0 {
		return nil, newErr(idxPath, "", ErrFormat, "index has no weight_map entries")
	}
	names := make([]string, 0, len(idx.WeightMap))
	for name := range idx.WeightMap {
		names = append(names, name)
	}
	sort.Strings(names) // deterministic errors: first offending tensor by name

	m := &Model{dir: dir, byName: make(map[string]*File, len(names)), meta: idx.Metadata}
	shards := map[string]*File{}
	for _, name := range names {
		shard := idx.WeightMap[name]
		f, ok := shards[shard]
		if !ok {
			if !safeShardName(shard) {
				m.Close()
				return nil, newErr(idxPath, name, ErrUnsafePath, "shard name %q must be a plain file name inside the model directory", shard)
			}
			shardPath := filepath.Join(dir, shard)
			f, err = Open(shardPath)
			if err != nil {
				m.Close()
				if errors.Is(err, ErrNotFound) {
					return nil, newErr(idxPath, name, ErrNotFound, "shard %q is missing (%s)", shard, shardPath)
				}
				return nil, err
			}
			shards[shard] = f
			m.files = append(m.files, f)
		}
		i, ok := f.index[name]
		if !ok {
			m.Close()
			return nil, newErr(idxPath, name, ErrNotFound, "listed in index but absent from shard %q", shard)
		}
		m.byName[name] = f
		m.infos = append(m.infos, f.infos[i])
	}
	return m, nil
}

// safeShardName confines shards to the model directory: no separators, no
// "..", nothing absolute. Symlinked shards (as in the HF cache) stay allowed.
func safeShardName(s string) bool {
	return s != "" && s != "." && s != ".." &&
		!strings.ContainsAny(s, `/\`) && !strings.Contains(s, "..") &&
		!filepath.IsAbs(s) && filepath.Base(s) == s
}

// Close unmaps every shard.
func (m *Model) Close() error {
	var errs []error
	for _, f := range m.files {
		if err := f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Dir is the directory the model was opened from.
func (m *Model) Dir() string { return m.dir }

// IndexMetadata returns the index's "metadata" object (nil for a single file).
func (m *Model) IndexMetadata() map[string]any { return m.meta }

// Files returns the opened shard files (one element for a single file).
func (m *Model) Files() []*File { return append([]*File(nil), m.files...) }

// Tensors lists all tensors across shards, sorted by name.
func (m *Model) Tensors() []TensorInfo {
	out := make([]TensorInfo, len(m.infos))
	for i, t := range m.infos {
		out[i] = t.clone()
	}
	return out
}

// Info returns the named tensor's description.
func (m *Model) Info(name string) (TensorInfo, bool) {
	f, ok := m.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Info(name)
}

// PathOf is the path of the file holding the named tensor ("" if none).
func (m *Model) PathOf(name string) string {
	if f, ok := m.byName[name]; ok {
		return f.path
	}
	return ""
}

func (m *Model) file(name string) (*File, error) {
	f, ok := m.byName[name]
	if !ok {
		return nil, newErr(m.dir, name, ErrNotFound, "no such tensor in model")
	}
	return f, nil
}

// Bytes returns the tensor's raw bytes, valid until Close.
func (m *Model) Bytes(name string) ([]byte, error) {
	f, err := m.file(name)
	if err != nil {
		return nil, err
	}
	return f.Bytes(name)
}

// Float32 converts the named tensor into dst; see File.Float32.
func (m *Model) Float32(name string, dst []float32) error {
	f, err := m.file(name)
	if err != nil {
		return err
	}
	return f.Float32(name, dst)
}

// Float32At converts the values [off, off+len(dst)) of the named tensor
// (row-major) into dst, as Float32 does for the whole tensor.
func (m *Model) Float32At(name string, dst []float32, off int) error {
	f, err := m.file(name)
	if err != nil {
		return err
	}
	return f.Float32At(name, dst, off)
}

// Float32At converts the values [off, off+len(dst)) of the named tensor
// (row-major) into dst, as Float32 does for the whole tensor.
func (f *File) Float32At(name string, dst []float32, off int) error {
	t, b, err := f.lookup(name)
	if err != nil {
		return err
	}
	if !t.DType.convertible() {
		return newErr(f.path, name, ErrUnsupportedDType, "cannot convert dtype %s to float32 (only F32, BF16, F16)", t.DType)
	}
	if n := t.NumElements(); off < 0 || off+len(dst) > n {
		return newErr(f.path, name, ErrSize, "values [%d, %d) outside the tensor's %d (shape %v)", off, off+len(dst), n, t.Shape)
	}
	size := t.DType.Size()
	decode(dst, b[off*size:(off+len(dst))*size], t.DType)
	return nil
}
