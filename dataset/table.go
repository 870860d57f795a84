package dataset

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"hone/tabular"
)

// source is the data behind a path: JSONL or text files, or a table
// (Parquet, a Hugging Face dataset, a Delta table; see package tabular).
type source struct {
	files []string       // the files read: JSONL or text, or the table's Parquet files
	table *tabular.Table // nil for JSONL and text
}

// size is the bytes of src's files (those it cannot stat count 0).
func (src source) size() int64 {
	var n int64
	for _, f := range src.files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// DefaultEvalSplit is the Hugging Face split read for eval data: the first
// of validation and test that the dataset has.
const DefaultEvalSplit = "validation,test"

// openSource resolves a data path. A table's rows go through the same
// record rules as JSONL lines (chat: column messages; instruct: prompt and
// response or completion; cpt: text, one document a row); other columns
// are ignored.
func openSource(ctx context.Context, path string, task Task, opt Options, eval bool) (source, []Problem, error) {
	topt := tabular.Options{Split: opt.Split, Version: -1}
	if eval {
		topt.Split = opt.EvalSplit
		if topt.Split == "" {
			topt.Split = DefaultEvalSplit
		}
	}
	if opt.Version != nil && !eval {
		topt.Version = *opt.Version
	}
	if !tabular.Detect(path, topt) {
		files, probs, err := dataFiles(path, task)
		return source{files: files}, probs, err
	}
	t, err := tabular.Open(ctx, path, topt)
	if err != nil {
		return source{}, nil, fmt.Errorf("dataset: data %s: %w", path, err)
	}
	src := source{table: t}
	for _, f := range t.Files {
		src.files = append(src.files, f.Path)
	}
	if len(src.files) == 0 {
		return src, []Problem{{File: path, Rule: RuleNoFiles, Message: fmt.Sprintf("the %s table holds no data files", t.Kind)}}, nil
	}
	return src, nil, nil
}

// textFiles are the files read as plain text or JSONL (none for a table).
func (s source) textFiles() []string {
	if s.table != nil {
		return nil
	}
	return s.files
}

// describe is what identifies a table's rows beyond its files' contents:
// the partition values and column names the log holds.
func (s source) describe() string {
	if s.table == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s split=%s", s.table.Kind, s.table.Split)
	for _, f := range s.table.Files {
		c, _ := json.Marshal(f.Constant)
		fmt.Fprintf(&b, "\x00%s %s", f.Path, c)
	}
	return b.String()
}

// columns are the columns a task reads from a table.
func (t Task) columns() (want []string, need [][]string) {
	switch t {
	case CPT:
		return []string{"text"}, [][]string{{"text"}}
	case Instruct:
		return []string{"prompt", "response", "completion"}, [][]string{{"prompt"}, {"response", "completion"}}
	}
	return []string{"messages"}, [][]string{{"messages"}}
}

// missingColumn is the problem of a file without a needed column (one of
// alternatives), or nil.
func missingColumn(file string, columns []string, need [][]string) *Problem {
	for _, alts := range need {
		if !slices.ContainsFunc(alts, func(c string) bool { return slices.Contains(columns, c) }) {
			return &Problem{File: file, Field: alts[0], Rule: RuleMissingColumn,
				Message: fmt.Sprintf("the table has no column %q (its columns: %s)", strings.Join(alts, `" or "`), strings.Join(columns, ", "))}
		}
	}
	return nil
}

// fileSize is the size of f, for progress (0 when unknown).
func fileSize(f string) int64 {
	if fi, err := os.Stat(f); err == nil {
		return fi.Size()
	}
	return 0
}

// scanTable runs the scanner over a table's rows: each row becomes a
// record (chat, instruct) or a document (cpt). Progress advances by each
// file's size once it is read.
func (s *scanner) scanTable(ctx context.Context, t *tabular.Table) error {
	want, need := s.task.columns()
	if s.task == CPT {
		return s.scanDocs(ctx, t.Path, func(ctx context.Context, emit func(cptJob) error) error {
			return scanTableFiles(ctx, t, want, need, func(p *Problem, bytes int64) error {
				return emit(cptJob{problems: []Problem{*p}, bytes: bytes})
			}, func(bytes int64) error {
				return emit(cptJob{bytes: bytes})
			}, func(loc tabular.Loc, obj []byte, verr *tabular.ValueError) error {
				doc, prob := tableDoc(loc, obj, verr)
				if prob != nil {
					return emit(cptJob{problems: []Problem{*prob}})
				}
				return chunks(strings.NewReader(doc), loc.File, func(chunk []byte, first, last bool) error {
					return emit(cptJob{chunk: chunk, first: first, last: last})
				})
			})
		})
	}
	parse := s.parser()
	return s.scanRecords(ctx, func(ctx context.Context, emit func(jsonJob) error) error {
		return scanTableFiles(ctx, t, want, need, func(p *Problem, bytes int64) error {
			return emit(jsonJob{problems: []Problem{*p}, bytes: bytes})
		}, func(bytes int64) error {
			return emit(jsonJob{bytes: bytes})
		}, func(loc tabular.Loc, obj []byte, verr *tabular.ValueError) error {
			at := record{file: loc.File, rowGroup: loc.RowGroup, row: loc.Row}
			if verr != nil {
				return emit(jsonJob{problems: []Problem{at.at(Problem{Field: verr.Field, Rule: RuleInvalidUTF8, Message: verr.Message})}, record: true})
			}
			rec, probs := parse(loc.File, 0, obj)
			rec.rowGroup, rec.row = loc.RowGroup, loc.Row
			for i := range probs {
				probs[i] = at.at(probs[i])
			}
			return emit(jsonJob{rec: rec, problems: probs, record: true})
		})
	})
}

// scanTableFiles scans t, reporting a file that lacks a needed column
// through missing (and skipping it), each file's size through done once
// read, and each row through row.
func scanTableFiles(ctx context.Context, t *tabular.Table, want []string, need [][]string,
	missing func(p *Problem, bytes int64) error, done func(bytes int64) error, row tabular.RowFunc) error {
	prev := ""
	finish := func() error {
		if prev == "" {
			return nil
		}
		return done(fileSize(prev))
	}
	start := func(file string, columns []string) (bool, error) {
		if err := finish(); err != nil {
			return false, err
		}
		prev = ""
		if p := missingColumn(file, columns, need); p != nil {
			return false, missing(p, fileSize(file))
		}
		prev = file
		return true, nil
	}
	if err := t.Scan(ctx, want, start, row); err != nil {
		return err
	}
	return finish()
}

// tableDoc checks a cpt row: its text must be a non-blank string.
func tableDoc(loc tabular.Loc, obj []byte, verr *tabular.ValueError) (string, *Problem) {
	at := record{file: loc.File, rowGroup: loc.RowGroup, row: loc.Row}
	if verr != nil {
		p := at.at(Problem{Field: verr.Field, Rule: RuleInvalidUTF8, Message: verr.Message})
		return "", &p
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		p := at.at(Problem{Field: "text", Rule: RuleInvalidJSON, Message: err.Error()})
		return "", &p
	}
	c := &lineChecker{file: loc.File}
	doc, ok := c.str("text", bytes.TrimSpace(m["text"]), true)
	if !ok {
		p := at.at(c.problems[0])
		return "", &p
	}
	return doc, nil
}
