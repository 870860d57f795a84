package dataset

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
)

// storeVersion changes whenever the stored format or the tokens produced for
// the same inputs change.
const storeVersion = 1

// storedSet describes one tokenized data set (train or eval data) in meta.json.
type storedSet struct {
	Name      string      `json:"name"` // file prefix: train or eval
	Examples  int64       `json:"examples"`
	Tokens    int64       `json:"tokens"`
	Overlong  int64       `json:"overlong"`
	Truncated int64       `json:"truncated"`
	Dropped   int64       `json:"dropped"`
	Lengths   Percentiles `json:"lengths"`
}

// storeMeta is meta.json, written last: its presence marks a complete entry.
type storeMeta struct {
	Version         int        `json:"version"`
	Fingerprint     string     `json:"fingerprint"`
	Task            Task       `json:"task"`
	ContextLength   int        `json:"context_length"`
	ModelMaxContext int        `json:"model_max_context"`
	PadID           int        `json:"pad_id"`
	Train           storedSet  `json:"train"`
	Eval            *storedSet `json:"eval,omitempty"`
}

// fingerprint hashes every input that changes the stored tokens.
func fingerprint(m *model, task Task, opt Options, src, evalSrc source) (string, error) {
	h := sha256.New()
	field := func(k string, v any) { fmt.Fprintf(h, "%s=%v\x00", k, v) }
	field("version", storeVersion)
	field("task", task)
	field("context_length", m.ctxLen)
	field("overlong", opt.Overlong)
	if task == Chat {
		field("chat_loss", opt.ChatLoss)
	}
	if task == CPT {
		field("cpt_chunk", cptChunk)
	}
	sp := m.sp
	field("special", fmt.Sprintf("%d %d %d %t %q %q", sp.BOS, sp.EOS, sp.PAD, sp.AddBOS, sp.BOSToken, sp.EOSToken))
	field("pad", m.padID)
	field("template", m.templateSource())
	for _, f := range m.modelFiles() {
		if err := hashFile(h, "model:"+filepath.Base(f), f); err != nil {
			return "", err
		}
	}
	field("data_table", src.describe())
	field("eval_table", evalSrc.describe())
	for _, f := range src.files {
		if err := hashFile(h, "data:"+filepath.Base(f), f); err != nil {
			return "", err
		}
	}
	for _, f := range evalSrc.files {
		if err := hashFile(h, "eval:"+filepath.Base(f), f); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashFile adds name, size and the SHA-256 of f's contents (streamed) to h.
func hashFile(h hash.Hash, name, f string) error {
	fh, err := os.Open(f)
	if err != nil {
		return fmt.Errorf("dataset: %w", err)
	}
	defer fh.Close()
	fs := sha256.New()
	n, err := io.Copy(fs, fh)
	if err != nil {
		return fmt.Errorf("dataset: %s: %w", f, err)
	}
	fmt.Fprintf(h, "%s\x00%d\x00%x\x00", name, n, fs.Sum(nil))
	return nil
}

// syncedFile is a buffered file that is fsynced on close.
type syncedFile struct {
	f *os.File
	w *bufio.Writer
}

func createSynced(path string) (*syncedFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	return &syncedFile{f: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

func (s *syncedFile) close() error {
	err := s.w.Flush()
	if err == nil {
		err = s.f.Sync()
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("dataset: writing %s: %w", s.f.Name(), err)
	}
	return nil
}

// setWriter writes one data set: <name>.tok holds the tokens as uint32 LE
// (id | trainedBit), <name>.off the uint64 LE end offset (in tokens) of each
// example or document, and for chat/instruct <name>.scored the uint32 LE
// number of scored positions of each example.
type setWriter struct {
	tok, off, scored *syncedFile
	pos              int64
	b                [8]byte
}

func newSetWriter(dir, name string, withScored bool) (*setWriter, error) {
	w := &setWriter{}
	var err error
	if w.tok, err = createSynced(filepath.Join(dir, name+".tok")); err != nil {
		return nil, err
	}
	if w.off, err = createSynced(filepath.Join(dir, name+".off")); err != nil {
		return nil, err
	}
	if withScored {
		if w.scored, err = createSynced(filepath.Join(dir, name+".scored")); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func (w *setWriter) writeToks(toks []uint32) error {
	for _, t := range toks {
		binary.LittleEndian.PutUint32(w.b[:4], t)
		if _, err := w.tok.w.Write(w.b[:4]); err != nil {
			return err
		}
	}
	w.pos += int64(len(toks))
	return nil
}

func (w *setWriter) writeIDs(ids []int) error {
	for _, id := range ids {
		binary.LittleEndian.PutUint32(w.b[:4], uint32(id)|trainedBit)
		if _, err := w.tok.w.Write(w.b[:4]); err != nil {
			return err
		}
	}
	w.pos += int64(len(ids))
	return nil
}

// end closes the current example or document.
func (w *setWriter) end(scored int64) error {
	binary.LittleEndian.PutUint64(w.b[:], uint64(w.pos))
	if _, err := w.off.w.Write(w.b[:]); err != nil {
		return err
	}
	if w.scored != nil {
		binary.LittleEndian.PutUint32(w.b[:4], uint32(scored))
		if _, err := w.scored.w.Write(w.b[:4]); err != nil {
			return err
		}
	}
	return nil
}

func (w *setWriter) close() error {
	var first error
	for _, f := range []*syncedFile{w.tok, w.off, w.scored} {
		if f != nil {
			if err := f.close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// writeJSONSynced writes v as JSON to path and fsyncs it.
func writeJSONSynced(path string, v any) error {
	f, err := createSynced(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f.w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		f.close()
		return err
	}
	return f.close()
}

// syncDir fsyncs a directory so a rename inside it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readUint64s reads a whole file of uint64 LE values, with a leading 0.
func readOffsets(path string) ([]int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("dataset: %s: truncated", path)
	}
	out := make([]int64, 1, len(b)/8+1)
	for i := 0; i < len(b); i += 8 {
		out = append(out, int64(binary.LittleEndian.Uint64(b[i:])))
	}
	return out, nil
}

// readUint32s reads a whole file of uint32 LE values.
func readUint32s(path string) ([]uint32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("dataset: %s: truncated", path)
	}
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out, nil
}

// readToks reads the stored tokens [a, b) of f.
func readToks(f *os.File, a, b int64) ([]uint32, error) {
	buf := make([]byte, 4*(b-a))
	if _, err := f.ReadAt(buf, 4*a); err != nil {
		return nil, fmt.Errorf("dataset: reading %s: %w", f.Name(), err)
	}
	out := make([]uint32, b-a)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(buf[4*i:])
	}
	return out, nil
}
