package tabular

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/parquet-go/parquet-go"
)

// Loc is where a row is: its file, row group (1-based) and row (1-based,
// counted over the whole file).
type Loc struct {
	File     string
	RowGroup int
	Row      int64
}

// ValueError is a value that cannot be read as JSON (invalid UTF-8 text, a
// NaN); Field names it ("messages[2].content").
type ValueError struct {
	Field   string
	Message string
}

func (e *ValueError) Error() string { return e.Field + ": " + e.Message }

// Rows are read from a row group in batches of at most maxBatchRows rows,
// fewer for large rows, so that a batch holds about batchBytes of JSON:
// documents of hundreds of KB are then read a few at a time.
const (
	maxBatchRows = 256
	batchBytes   = 1 << 20
)

// RowFunc receives one row: a JSON object holding the wanted columns the
// file has, or a *ValueError for a value that could not be converted.
type RowFunc func(loc Loc, obj []byte, verr *ValueError) error

// Scan reads the table file by file in order. For each file, start is
// called with the file's column names; when it returns false the file is
// skipped, and its error stops the scan. Then row is called with each row's wanted columns. Memory is
// bounded by the wanted columns of one row group.
func (t *Table) Scan(ctx context.Context, want []string, start func(file string, columns []string) (bool, error), row RowFunc) error {
	for _, f := range t.Files {
		if err := scanFile(ctx, f, want, start, row); err != nil {
			return err
		}
	}
	return nil
}

func scanFile(ctx context.Context, f File, want []string, start func(string, []string) (bool, error), row RowFunc) error {
	fh, err := os.Open(f.Path)
	if err != nil {
		return fmt.Errorf("tabular: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return fmt.Errorf("tabular: %w", err)
	}
	pf, err := openParquet(fh, st.Size())
	if err != nil {
		return fmt.Errorf("tabular: %s: not a readable Parquet file: %w", f.Path, err)
	}
	group := parquet.Group{}
	var columns []string
	for _, fld := range pf.Schema().Fields() {
		name := f.logical(fld.Name())
		columns = append(columns, name)
		if slices.Contains(want, name) {
			group[fld.Name()] = fld
		}
	}
	// A Delta table's columns are its schema's: a file written before a
	// column was added lacks it, and its rows read it as null.
	for _, name := range slices.Sorted(maps.Keys(f.Types)) {
		if !slices.Contains(columns, name) {
			columns = append(columns, name)
		}
	}
	for name := range f.Constant {
		if !slices.Contains(columns, name) {
			columns = append(columns, name)
		}
	}
	if ok, err := start(f.Path, columns); !ok || err != nil {
		return err
	}
	sub := parquet.NewSchema("row", group)
	conv, err := parquet.Convert(sub, pf.Schema())
	if err != nil {
		return fmt.Errorf("tabular: %s: %w", f.Path, err)
	}
	var first int64
	for i, rg := range pf.RowGroups() {
		loc := Loc{File: f.Path, RowGroup: i + 1, Row: first}
		if err := scanRowGroup(ctx, f, want, sub, parquet.ConvertRowGroup(rg, conv), loc, row); err != nil {
			return err
		}
		first += rg.NumRows()
	}
	return nil
}

// openParquet opens a Parquet file, turning the library's panics on
// malformed input into errors.
func openParquet(r io.ReaderAt, size int64) (pf *parquet.File, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	return parquet.OpenFile(r, size, parquet.SkipBloomFilters(true))
}

// scanRowGroup streams one row group; loc.Row is the row before its first.
func scanRowGroup(ctx context.Context, f File, want []string, sub *parquet.Schema, rg parquet.RowGroup, loc Loc, fn RowFunc) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("tabular: %s: row group %d: malformed Parquet: %v", f.Path, loc.RowGroup, p)
		}
	}()
	rr := rg.Rows()
	defer rr.Close()
	rows := make([]parquet.Row, maxBatchRows)
	batch := 1 // rows to read next; grows while rows are small
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := rr.ReadRows(rows[:batch])
		size := 0
		for i, r := range rows[:n] {
			loc.Row++
			m := map[string]any{}
			if err := sub.Reconstruct(&m, r); err != nil {
				return fmt.Errorf("tabular: %s: row group %d, row %d: %w", f.Path, loc.RowGroup, loc.Row, err)
			}
			rows[i] = r[:0] // let the values go
			obj, verr := f.rowJSON(m, want)
			size += len(obj)
			if err := fn(loc, obj, verr); err != nil {
				return err
			}
		}
		if n > 0 {
			batch = min(max(batchBytes/max(size/n, 1), 1), maxBatchRows)
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("tabular: %s: row group %d: %w", f.Path, loc.RowGroup, rerr)
		}
	}
}

func (f File) logical(physical string) string {
	if f.Names != nil {
		if n, ok := f.Names.fields[physical]; ok {
			return n.logical
		}
	}
	return physical
}

// rowJSON renames m's columns, adds the constant columns and encodes the
// wanted ones as a JSON object. A null is left out, as a JSONL line leaves
// out a key it has no value for: a table may have both a response and a
// completion column, each null where the other is set.
func (f File) rowJSON(m map[string]any, want []string) ([]byte, *ValueError) {
	out := make(map[string]any, len(want))
	for k, v := range m {
		if v == nil {
			continue
		}
		node := nameNode{logical: k}
		if f.Names != nil {
			if n, ok := f.Names.fields[k]; ok {
				node = n
			}
		}
		v, verr := clean(v, node.sub, node.logical)
		if verr != nil {
			return nil, verr
		}
		out[node.logical] = v
	}
	for k, v := range f.Constant {
		if v != nil && slices.Contains(want, k) {
			out[k] = constant(v, f.Types[k])
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, &ValueError{Message: err.Error()}
	}
	return b, nil
}

// clean makes v JSON-ready: byte strings become text (refused when not
// UTF-8), struct fields are renamed, and null struct fields are dropped.
func clean(v any, nm *names, field string) (any, *ValueError) {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer {
		// Optional map values come back as pointers.
		if rv.IsNil() {
			return nil, nil
		}
		return clean(rv.Elem().Interface(), nm, field)
	}
	switch x := v.(type) {
	case []byte:
		if !utf8.Valid(x) {
			return nil, &ValueError{Field: field, Message: "not valid UTF-8"}
		}
		return string(x), nil
	case string:
		if !utf8.ValidString(x) {
			return nil, &ValueError{Field: field, Message: "not valid UTF-8"}
		}
		return x, nil
	case []any:
		for i := range x {
			c, verr := clean(x[i], nm, fmt.Sprintf("%s[%d]", field, i))
			if verr != nil {
				return nil, verr
			}
			x[i] = c
		}
		return x, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if e == nil {
				continue
			}
			node := nameNode{logical: k}
			if nm != nil {
				if n, ok := nm.fields[k]; ok {
					node = n
				}
			}
			c, verr := clean(e, node.sub, field+"."+node.logical)
			if verr != nil {
				return nil, verr
			}
			out[node.logical] = c
		}
		return out, nil
	}
	return v, nil
}

// constant types a partition value by its column type.
func constant(v *string, typ string) any {
	switch {
	case typ == "boolean" && (*v == "true" || *v == "false"):
		return *v == "true"
	case slices.Contains([]string{"byte", "short", "integer", "long", "float", "double"}, typ) || strings.HasPrefix(typ, "decimal"):
		if json.Valid([]byte(*v)) {
			return json.RawMessage(*v)
		}
	}
	return *v
}
