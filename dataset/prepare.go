package dataset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// PrepareSpec says what to prepare.
type PrepareSpec struct {
	ModelDir string
	Task     Task
	Data     string
	// CacheDir holds the prepared data sets, one folder per fingerprint.
	CacheDir string
	Options
}

// ProblemsError is returned by Prepare when the data has bad records.
type ProblemsError struct {
	Problems []Problem // at most 1000
	Count    int
}

func (e *ProblemsError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "dataset: %d problem(s) in the data (run hone data validate for all):", e.Count)
	for i, p := range e.Problems {
		if i == 10 {
			break
		}
		sb.WriteString("\n  " + p.String())
	}
	return sb.String()
}

// Prepared is a tokenized data set on disk, split into train and eval rows.
// Its methods are safe for concurrent use until Close.
type Prepared struct {
	// FromCache reports that nothing was tokenized: the data was loaded from
	// an earlier Prepare with the same fingerprint.
	FromCache bool

	dir   string
	meta  storeMeta
	train *Split
	eval  *Split
	files []*os.File
}

// Fingerprint identifies the inputs the prepared data was made from.
func (p *Prepared) Fingerprint() string { return p.meta.Fingerprint }

// Dir is the cache folder holding the data.
func (p *Prepared) Dir() string { return p.dir }

// Task is the task type.
func (p *Prepared) Task() Task { return p.meta.Task }

// ContextLength is the row length.
func (p *Prepared) ContextLength() int { return p.meta.ContextLength }

// Train is the training split.
func (p *Prepared) Train() *Split { return p.train }

// Eval is the eval split, nil when there is none.
func (p *Prepared) Eval() *Split { return p.eval }

// Stats are the training split's statistics.
func (p *Prepared) Stats() Stats { return p.train.Stats() }

// Epoch is Train().Epoch.
func (p *Prepared) Epoch(e int, seed uint64) []int { return p.train.Epoch(e, seed) }

// Row is Train().Row.
func (p *Prepared) Row(i int) (Row, error) { return p.train.Row(i) }

// Close releases the files.
func (p *Prepared) Close() error {
	var first error
	for _, f := range p.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	p.files = nil
	return first
}

// Prepare validates and tokenizes the data, or loads it from CacheDir when an
// earlier Prepare had the same fingerprint. Bad records make it fail with a
// *ProblemsError. progress, when not nil, is called on the calling goroutine
// with the data bytes processed and the total.
func Prepare(ctx context.Context, spec PrepareSpec, progress func(done, total int64)) (*Prepared, error) {
	opt, err := spec.Options.withDefaults()
	if err != nil {
		return nil, err
	}
	if spec.CacheDir == "" {
		return nil, errors.New("dataset: Prepare needs a cache directory")
	}
	m, err := loadModel(spec.ModelDir, spec.Task, opt.ContextLength)
	if err != nil {
		return nil, err
	}
	src, evalSrc, err := openSources(ctx, spec, opt)
	if err != nil {
		return nil, err
	}
	fp, err := fingerprint(m, spec.Task, opt, src, evalSrc)
	if err != nil {
		return nil, err
	}
	final := filepath.Join(spec.CacheDir, fp)
	if p, err := openPrepared(final, fp, opt); err == nil {
		p.FromCache = true
		return p, nil
	}
	if err := os.MkdirAll(spec.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	tmp, err := os.MkdirTemp(spec.CacheDir, ".tmp-"+fp[:16]+"-")
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op after the rename
	if err := tokenizeInto(ctx, tmp, fp, m, spec, opt, src, evalSrc, progress); err != nil {
		return nil, err
	}
	if err := syncDir(tmp); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	os.RemoveAll(final) // an incomplete or unreadable entry from an earlier crash
	if err := os.Rename(tmp, final); err != nil {
		// Another process may have won the race: use its entry.
		if p, oerr := openPrepared(final, fp, opt); oerr == nil {
			return p, nil
		}
		return nil, fmt.Errorf("dataset: %w", err)
	}
	if err := syncDir(spec.CacheDir); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	return openPrepared(final, fp, opt)
}

// openSources opens the train data and the eval data (when set), failing
// with a *ProblemsError when either cannot be read as data.
func openSources(ctx context.Context, spec PrepareSpec, opt Options) (src, evalSrc source, err error) {
	src, probs, err := openSource(ctx, spec.Data, spec.Task, opt, false)
	if err != nil {
		return src, evalSrc, err
	}
	if opt.EvalData != "" {
		var eprobs []Problem
		if evalSrc, eprobs, err = openSource(ctx, opt.EvalData, spec.Task, opt, true); err != nil {
			return src, evalSrc, err
		}
		probs = append(probs, eprobs...)
	}
	if len(probs) > 0 {
		return src, evalSrc, &ProblemsError{Problems: probs, Count: len(probs)}
	}
	return src, evalSrc, nil
}

// tokenizeInto tokenizes the train and eval sets into dir and writes its
// meta.json (synced), reporting progress in bytes of data.
func tokenizeInto(ctx context.Context, dir, fp string, m *model, spec PrepareSpec, opt Options, src, evalSrc source,
	progress func(done, total int64)) error {
	meta := storeMeta{Version: storeVersion, Fingerprint: fp, Task: spec.Task, ContextLength: m.ctxLen, ModelMaxContext: m.maxContext, PadID: m.padID}
	var total, done int64
	for _, f := range append(append([]string(nil), src.files...), evalSrc.files...) {
		if fi, err := os.Stat(f); err == nil {
			total += fi.Size()
		}
	}
	report := func(n int64) {
		done += n
		if progress != nil {
			progress(done, total)
		}
	}
	pe := &ProblemsError{}
	var err error
	if meta.Train, err = writeSet(ctx, m, spec.Task, opt, src, dir, "train", report, pe); err != nil {
		return err
	}
	if len(evalSrc.files) > 0 {
		es, err := writeSet(ctx, m, spec.Task, opt, evalSrc, dir, "eval", report, pe)
		if err != nil {
			return err
		}
		meta.Eval = &es
	}
	if pe.Count > 0 {
		return pe
	}
	if meta.Train.Tokens == 0 {
		return fmt.Errorf("dataset: %s: no example fits the context length %d", spec.Data, m.ctxLen)
	}
	return writeJSONSynced(filepath.Join(dir, "meta.json"), meta)
}

// writeSet tokenizes src into dir/<name>.*, collecting problems into pe.
func writeSet(ctx context.Context, m *model, task Task, opt Options, src source, dir, name string, progress func(int64), pe *ProblemsError) (storedSet, error) {
	set := storedSet{Name: name}
	w, err := newSetWriter(dir, name, task != CPT)
	if err != nil {
		return set, err
	}
	s := &scanner{m: m, task: task, opt: opt, progress: progress, maxTokens: MaxTokens}
	s.problem = func(p Problem) {
		pe.Count++
		if len(pe.Problems) < maxProblems {
			pe.Problems = append(pe.Problems, p)
		}
	}
	col := &collector{ctxLen: m.ctxLen, overlong: opt.Overlong}
	col.kept = func(e encoded) error {
		if pe.Count > 0 {
			return nil // the result is discarded: only gather the problems
		}
		set.Examples++
		set.Tokens += int64(len(e.toks))
		if err := w.writeToks(e.toks); err != nil {
			return err
		}
		return w.end(scoredTokens(e.toks))
	}
	s.example = func(_ string, _ int, e encoded) error { return col.add(e) }
	cc := &cptCounter{ctx: int64(m.ctxLen)}
	s.tokens = func(ids []int, docEnd bool) error {
		cc.add(len(ids), docEnd)
		if pe.Count > 0 {
			return nil
		}
		if err := w.writeIDs(ids); err != nil {
			return err
		}
		if docEnd {
			return w.end(0)
		}
		return nil
	}
	err = s.scanFiles(ctx, src)
	if cerr := w.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return set, err
	}
	if task == CPT {
		set.Examples, set.Tokens, set.Lengths = cc.docs, cc.total, percentiles(cc.lengths)
	} else {
		set.Overlong, set.Truncated, set.Dropped = col.stats.Overlong, col.stats.Truncated, col.stats.Dropped
		set.Lengths = percentiles(col.lengths)
	}
	return set, nil
}

// openPrepared loads a complete cache entry.
func openPrepared(dir, fp string, opt Options) (*Prepared, error) {
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return nil, err
	}
	p := &Prepared{dir: dir}
	if err := json.Unmarshal(b, &p.meta); err != nil {
		return nil, fmt.Errorf("dataset: %s: %w", dir, err)
	}
	if p.meta.Version != storeVersion || p.meta.Fingerprint != fp {
		return nil, fmt.Errorf("dataset: %s: stale cache entry", dir)
	}
	train, err := p.openSet(p.meta.Train)
	if err != nil {
		p.Close()
		return nil, err
	}
	p.train = train.subset(nil, opt)
	switch {
	case p.meta.Eval != nil:
		ev, err := p.openSet(*p.meta.Eval)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.eval = ev.subset(nil, opt)
	case opt.EvalFraction > 0:
		n := len(train.off) - 1
		if p.meta.Task == CPT {
			n = int(train.numCPTRows())
		}
		tr, ev := splitEval(n, opt.EvalFraction, opt.EvalSeed)
		p.train = train.subset(tr, opt)
		if ev != nil {
			p.eval = train.subset(ev, opt)
		}
	}
	return p, nil
}

// storedData is one opened data set.
type storedData struct {
	p      *Prepared
	set    storedSet
	f      *os.File
	off    []int64  // example/document boundaries, starting with 0
	scored []uint32 // chat/instruct: scored positions per example
}

func (p *Prepared) openSet(set storedSet) (*storedData, error) {
	d := &storedData{p: p, set: set}
	var err error
	if d.off, err = readOffsets(filepath.Join(p.dir, set.Name+".off")); err != nil {
		return nil, err
	}
	if p.meta.Task != CPT {
		if d.scored, err = readUint32s(filepath.Join(p.dir, set.Name+".scored")); err != nil {
			return nil, err
		}
		if len(d.scored) != len(d.off)-1 {
			return nil, fmt.Errorf("dataset: %s: index files disagree", p.dir)
		}
	}
	if d.f, err = os.Open(filepath.Join(p.dir, set.Name+".tok")); err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	p.files = append(p.files, d.f)
	if fi, err := d.f.Stat(); err != nil || fi.Size() != 4*d.off[len(d.off)-1] {
		return nil, fmt.Errorf("dataset: %s: token file has the wrong size", p.dir)
	}
	return d, nil
}

func (d *storedData) total() int64 { return d.off[len(d.off)-1] }

func (d *storedData) numCPTRows() int64 {
	c := int64(d.p.meta.ContextLength)
	return (d.total() + c - 1) / c
}

// Split is a set of rows: the training data or the eval data.
type Split struct {
	d      *storedData
	ctxLen int
	rows   [][]int // chat/instruct: example indices of each row
	cpt    []int64 // cpt: the global row numbers of this split's rows
	stats  Stats
}

// subset makes a split of the examples (chat/instruct) or rows (cpt) idx;
// nil means all.
func (d *storedData) subset(idx []int, opt Options) *Split {
	c := d.p.meta.ContextLength
	s := &Split{d: d, ctxLen: c}
	st := &s.stats
	if idx == nil {
		st.Overlong, st.Truncated, st.Dropped = d.set.Overlong, d.set.Truncated, d.set.Dropped
		n := len(d.off) - 1
		if d.p.meta.Task == CPT {
			n = int(d.numCPTRows())
		}
		idx = make([]int, n)
		for i := range idx {
			idx[i] = i
		}
	}
	var lens []int32
	if d.p.meta.Task == CPT {
		s.cpt = make([]int64, len(idx))
		for k, r := range idx {
			s.cpt[k] = int64(r)
			a, b := int64(r)*int64(c), min(int64(r+1)*int64(c), d.total())
			starts, pieces := d.docsIn(a, b)
			st.Examples += int64(starts)
			st.Tokens += b - a
			st.TrainedTokens += b - a - int64(pieces)
		}
		for i := 1; i < len(d.off); i++ {
			lens = append(lens, int32(d.off[i]-d.off[i-1]))
		}
	} else {
		lengths := make([]int, len(idx))
		for k, i := range idx {
			lengths[k] = int(d.off[i+1] - d.off[i])
			lens = append(lens, int32(lengths[k]))
			st.Tokens += int64(lengths[k])
			st.TrainedTokens += int64(d.scored[i])
		}
		st.Examples = int64(len(idx))
		for _, row := range Pack(lengths, c) {
			for k := range row {
				row[k] = idx[row[k]]
			}
			s.rows = append(s.rows, row)
		}
	}
	st.Lengths = percentiles(lens)
	st.Rows = int64(s.NumRows())
	if st.Rows > 0 {
		st.Efficiency = float64(st.Tokens) / float64(st.Rows*int64(c))
	}
	return s
}

// docsIn returns, for the token range [a, b), how many documents start in
// it and how many document pieces (segments) it holds.
func (d *storedData) docsIn(a, b int64) (starts, pieces int) {
	// off[1:] are document ends; documents start at off[:len-1].
	i := sort.Search(len(d.off)-1, func(i int) bool { return d.off[i] >= a })
	j := sort.Search(len(d.off)-1, func(i int) bool { return d.off[i] >= b })
	starts = j - i
	pieces = starts
	if i == len(d.off)-1 || d.off[i] != a {
		pieces++ // the row begins inside a document
	}
	return starts, pieces
}

// Stats are the split's statistics (per epoch).
func (s *Split) Stats() Stats { return s.stats }

// NumRows is the number of rows per epoch.
func (s *Split) NumRows() int {
	if s.cpt != nil {
		return len(s.cpt)
	}
	return len(s.rows)
}

// Epoch returns the order of the rows in epoch e: a permutation of
// 0..NumRows()-1 that depends only on (e, seed).
func (s *Split) Epoch(e int, seed uint64) []int {
	return permutation(s.NumRows(), seed, epochStream+uint64(e))
}

// Rows yields the rows of epoch e in order.
func (s *Split) Rows(e int, seed uint64) iter.Seq2[Row, error] {
	return func(yield func(Row, error) bool) {
		for _, i := range s.Epoch(e, seed) {
			if !yield(s.Row(i)) {
				return
			}
		}
	}
}

// Row reads row i (0 <= i < NumRows()) from disk.
func (s *Split) Row(i int) (Row, error) {
	d := s.d
	if i < 0 || i >= s.NumRows() {
		return Row{}, fmt.Errorf("dataset: row %d out of range [0, %d)", i, s.NumRows())
	}
	if s.cpt == nil {
		var segs [][]uint32
		for _, ex := range s.rows[i] {
			toks, err := readToks(d.f, d.off[ex], d.off[ex+1])
			if err != nil {
				return Row{}, err
			}
			segs = append(segs, toks)
		}
		return buildRow(s.ctxLen, d.p.meta.PadID, segs), nil
	}
	a := s.cpt[i] * int64(s.ctxLen)
	b := min(a+int64(s.ctxLen), d.total())
	toks, err := readToks(d.f, a, b)
	if err != nil {
		return Row{}, err
	}
	var segs [][]uint32
	start := a
	k := sort.Search(len(d.off), func(k int) bool { return d.off[k] > a })
	for ; k < len(d.off) && d.off[k] < b; k++ {
		segs = append(segs, toks[start-a:d.off[k]-a])
		start = d.off[k]
	}
	segs = append(segs, toks[start-a:])
	return buildRow(s.ctxLen, d.p.meta.PadID, segs), nil
}
