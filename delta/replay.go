package delta

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// replay accumulates the actions of a checkpoint and the commits after it.
type replay struct {
	dir      string
	live     map[string]addAction // by decoded path
	protocol *protocolAction
	meta     *metaDataAction
}

// action is one line of a commit (one of the fields is set).
type action struct {
	Add      *addAction      `json:"add"`
	Remove   *removeAction   `json:"remove"`
	MetaData *metaDataAction `json:"metaData"`
	Protocol *protocolAction `json:"protocol"`
}

type addAction struct {
	Path            string             `json:"path"`
	PartitionValues map[string]*string `json:"partitionValues"`
	DeletionVector  json.RawMessage    `json:"deletionVector"`
}

type removeAction struct {
	Path string `json:"path"`
}

type protocolAction struct {
	MinReaderVersion int      `json:"minReaderVersion"`
	ReaderFeatures   []string `json:"readerFeatures"`
}

type metaDataAction struct {
	SchemaString     string            `json:"schemaString"`
	PartitionColumns []string          `json:"partitionColumns"`
	Configuration    map[string]string `json:"configuration"`
}

// pathKey is the identity of a data file across actions: its decoded path,
// so an add and a remove that escape the same name differently still match.
func pathKey(p string) string {
	if d, err := url.PathUnescape(p); err == nil {
		return d
	}
	return p
}

func (r *replay) apply(a action) error {
	switch {
	case a.Add != nil:
		if a.Add.Path == "" {
			return fmt.Errorf("an add action has no path")
		}
		r.live[pathKey(a.Add.Path)] = *a.Add
	case a.Remove != nil:
		delete(r.live, pathKey(a.Remove.Path))
	case a.MetaData != nil:
		r.meta = a.MetaData
	case a.Protocol != nil:
		r.protocol = a.Protocol
	}
	return nil
}

// commit replays one JSON commit file.
func (r *replay) commit(ctx context.Context, file string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("delta: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	for line := 1; ; line++ {
		b, rerr := br.ReadBytes('\n')
		if b = bytes.TrimSpace(b); len(b) > 0 {
			var a action
			if err := json.Unmarshal(b, &a); err != nil {
				return fmt.Errorf("delta: %s:%d: %w", file, line, err)
			}
			if err := r.apply(a); err != nil {
				return fmt.Errorf("delta: %s:%d: %w", file, line, err)
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("delta: %s: %w", file, rerr)
		}
	}
}

// checkpoint replays one checkpoint Parquet file (or part). Its remove
// rows are tombstones kept for VACUUM and change nothing here.
func (r *replay) checkpoint(ctx context.Context, file string) (err error) {
	defer func() {
		// parquet-go panics on some malformed files; report it as this
		// file's error rather than crash the process.
		if p := recover(); p != nil {
			err = fmt.Errorf("delta: checkpoint %s: malformed Parquet: %v", file, p)
		}
	}()
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("delta: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("delta: %w", err)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		return fmt.Errorf("delta: checkpoint %s: %w", file, err)
	}
	want := parquet.Group{}
	for _, fld := range pf.Schema().Fields() {
		if slices.Contains([]string{"add", "metaData", "protocol"}, fld.Name()) {
			want[fld.Name()] = fld
		}
	}
	sub := parquet.NewSchema("checkpoint", want)
	conv, err := parquet.Convert(sub, pf.Schema())
	if err != nil {
		return fmt.Errorf("delta: checkpoint %s: %w", file, err)
	}
	rows := make([]parquet.Row, 64)
	for _, rg := range pf.RowGroups() {
		rr := parquet.ConvertRowGroup(rg, conv).Rows()
		for {
			if err := ctx.Err(); err != nil {
				rr.Close()
				return err
			}
			n, rerr := rr.ReadRows(rows)
			for _, row := range rows[:n] {
				m := map[string]any{}
				if err := sub.Reconstruct(&m, row); err != nil {
					rr.Close()
					return fmt.Errorf("delta: checkpoint %s: %w", file, err)
				}
				if err := r.applyMap(m); err != nil {
					rr.Close()
					return fmt.Errorf("delta: checkpoint %s: %w", file, err)
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				rr.Close()
				return fmt.Errorf("delta: checkpoint %s: %w", file, rerr)
			}
		}
		rr.Close()
	}
	return nil
}

// applyMap applies a checkpoint row: its non-null action column, through
// JSON so checkpoints and commits share one decoding.
func (r *replay) applyMap(m map[string]any) error {
	for k, v := range m {
		if v == nil {
			delete(m, k)
		}
	}
	if len(m) == 0 {
		return nil
	}
	b, err := json.Marshal(textBytes(m))
	if err != nil {
		return err
	}
	var a action
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	return r.apply(a)
}

// textBytes turns the byte strings of a reconstructed row into strings:
// a writer may store text without the UTF-8 annotation (DuckDB does for
// map values), and JSON would otherwise encode it as base64.
func textBytes(v any) any {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer {
		// Optional map values come back as pointers.
		if rv.IsNil() {
			return nil
		}
		return textBytes(rv.Elem().Interface())
	}
	switch x := v.(type) {
	case []byte:
		return string(x)
	case []any:
		for i := range x {
			x[i] = textBytes(x[i])
		}
	case map[string]any:
		for k, e := range x {
			x[k] = textBytes(e)
		}
	}
	return v
}

// check refuses what this reader cannot read correctly.
func (p *protocolAction) check() error {
	switch {
	case p.MinReaderVersion > maxReaderVersion:
		return fmt.Errorf("the table needs Delta reader version %d; hone reads up to version %d", p.MinReaderVersion, maxReaderVersion)
	case p.MinReaderVersion == 3:
		for _, f := range p.ReaderFeatures {
			if !slices.Contains(supportedFeatures, f) {
				return fmt.Errorf("the table uses the reader feature %q, which hone does not support (it reads %s); rewrite the table without it", f, strings.Join(supportedFeatures, ", "))
			}
		}
	}
	return nil
}
