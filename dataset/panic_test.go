package dataset

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestTemplateEnginePanicNamesRecord: the template engine panics on a
// negative string repeat ('-' * n with n < 0; Jinja2 gives ”), which this
// template reaches only for content longer than 3 characters. Validation
// and Prepare report the record that tripped it instead of crashing.
func TestTemplateEnginePanicNamesRecord(t *testing.T) {
	tpl := "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{{ '.' * (3 - m['content'] | length) }}{% endfor %}"
	dir := t.TempDir()
	data := writeFile(t, dir, "d.jsonl", `{"messages":[{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}`+"\n"+
		`{"messages":[{"role":"user","content":"a longer question"},{"role":"assistant","content":"a"}]}`+"\n")
	mdir := modelDir(t, &tpl)
	r, err := Validate(context.Background(), mdir, Chat, data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.ProblemCount != 1 || r.Problems[0].Line != 2 || r.Problems[0].Rule != RuleTemplate || !strings.Contains(r.Problems[0].Message, "internal error") {
		t.Fatalf("problems %+v; want one at line 2 reporting the engine's internal error", r.Problems)
	}
	_, err = Prepare(context.Background(), PrepareSpec{ModelDir: mdir, Task: Chat, Data: data, CacheDir: filepath.Join(dir, "cache"),
		Options: Options{ContextLength: 64}}, nil)
	if err == nil || !strings.Contains(err.Error(), "d.jsonl:2") {
		t.Fatalf("Prepare = %v; want an error naming d.jsonl:2", err)
	}
}

// TestOrderedMapRecoversPanics: a panic in a worker or in the producer
// stops the pipeline with an error naming the job and the panicking line,
// and the results before it are consumed in order.
func TestOrderedMapRecoversPanics(t *testing.T) {
	produce := func(ctx context.Context, emit func(int) error) error {
		for i := range 100 {
			if err := emit(i); err != nil {
				return err
			}
		}
		return nil
	}
	work := func(i int) int {
		if i == 37 {
			var m map[string]int
			m["x"] = i // a real runtime panic: assignment to a nil map
		}
		return i * 2
	}
	where := func(i int) string { return fmt.Sprintf("job %d", i) }
	var got []int
	err := orderedMap(context.Background(), 4, produce, work, where, func(r int) error {
		got = append(got, r)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "job 37: internal error") || !strings.Contains(err.Error(), "nil map") ||
		!strings.Contains(err.Error(), "panic_test.go:") {
		t.Fatalf("orderedMap = %v; want an error naming job 37, the panic and its line", err)
	}
	if len(got) != 37 || got[36] != 72 {
		t.Fatalf("consumed %d results before the panic (last %v); want 37 in order", len(got), got[len(got)-1:])
	}

	boom := func(ctx context.Context, emit func(int) error) error {
		if err := emit(1); err != nil {
			return err
		}
		panic(errors.New("producer bug"))
	}
	err = orderedMap(context.Background(), 2, boom, work, where, func(int) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "producer bug") {
		t.Fatalf("orderedMap with a panicking producer = %v", err)
	}
}
