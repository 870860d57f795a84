package dataset

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// orderedMap runs work on every job produce emits, on n goroutines, and
// hands the results to consume in the order the jobs were emitted. At most
// about 2n jobs are in flight, so memory stays bounded. consume runs on the
// calling goroutine; its first error (or ctx's) stops the pipeline. A panic
// in work (tokenizing, rendering a template: a bug, never bad data) stops it
// too, with an error naming the job as where describes it, so one record
// cannot take down the process running a validation or a training run.
func orderedMap[J, R any](ctx context.Context, n int, produce func(ctx context.Context, emit func(J) error) error,
	work func(J) R, where func(J) string, consume func(R) error) error {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type item struct {
		job J
		out chan outcome[R]
	}
	jobs := make(chan item)
	order := make(chan chan outcome[R], 2*n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for it := range jobs {
				it.out <- safeWork(work, where, it.job)
			}
		})
	}
	prodErr := make(chan error, 1)
	go func() {
		defer close(prodErr)
		defer func() {
			if v := recover(); v != nil {
				prodErr <- panicError("reading the data", v)
			}
		}()
		defer close(order)
		defer close(jobs)
		prodErr <- produce(ctx, func(j J) error {
			out := make(chan outcome[R], 1)
			select {
			case order <- out:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			select {
			case jobs <- item{j, out}:
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		})
	}()
	var cerr error
	for out := range order {
		if cerr != nil {
			continue // drain
		}
		select {
		case r := <-out:
			err := r.err
			if err == nil {
				err = consume(r.r)
			}
			if err != nil {
				cerr = err
				cancel(err)
			}
		case <-ctx.Done():
			cerr = context.Cause(ctx)
		}
	}
	wg.Wait()
	perr := <-prodErr
	if cerr != nil {
		return cerr
	}
	return perr
}

type outcome[R any] struct {
	r   R
	err error
}

func safeWork[J, R any](work func(J) R, where func(J) string, job J) (res outcome[R]) {
	defer func() {
		if v := recover(); v != nil {
			res.err = panicError(where(job), v)
		}
	}()
	res.r = work(job)
	return res
}

// panicError reports a recovered panic as an error naming what was being
// handled, with the panicking frame for the bug report.
func panicError(where string, v any) error {
	return fmt.Errorf("%s: internal error (a bug in hone; please report it with this record): %v\n%s", where, v, panicSite())
}

// panicSite is the first frame below runtime.gopanic outside the runtime:
// where the panic happened. It must be called from the deferred recovery.
func panicSite() string {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	panicking := false
	for {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			panicking = true
		case panicking && !strings.HasPrefix(f.Function, "runtime."):
			return fmt.Sprintf("at %s (%s:%d)", f.Function, filepath.Base(f.File), f.Line)
		}
		if !more {
			return ""
		}
	}
}

// scanner drives reading, validating and tokenizing a data set. Callbacks
// run on the calling goroutine, in data order.
type scanner struct {
	m        *model
	task     Task
	opt      Options
	progress func(n int64) // bytes of data consumed
	// checked, when not nil, is called after each record (line, row or
	// document) is consumed, after progress for its bytes.
	checked func()
	// problem receives every bad record.
	problem func(Problem)
	// example receives each valid chat/instruct example (before any
	// truncation), in file order.
	example func(file string, line int, e encoded) error
	// tokens receives the cpt token stream; docEnd marks the end of a
	// document (its EOS is the last of ids).
	tokens func(ids []int, docEnd bool) error
	// maxTokens stops a cpt scan early with a problem once exceeded.
	maxTokens int64
}

type jsonJob struct {
	rec      record
	problems []Problem
	bytes    int64
	record   bool // one line or row (not a file's trailing bytes or problems)
}

type jsonResult struct {
	rec      record
	enc      encoded
	problems []Problem
	bytes    int64
	record   bool
}

// scanFiles runs the scanner over the data of src.
func (s *scanner) scanFiles(ctx context.Context, src source) error {
	if src.table != nil {
		return s.scanTable(ctx, src.table)
	}
	files := src.files
	if s.task == CPT {
		where := ""
		if len(files) > 0 {
			where = files[0]
		}
		return s.scanDocs(ctx, where, textProducer(files))
	}
	parse := s.parser()
	produce := func(ctx context.Context, emit func(jsonJob) error) error {
		for _, f := range files {
			var pending int64
			probs, err := readJSONL(f, func(line int, b []byte) error {
				rec, probs, err := safeParse(parse, f, line, b)
				if err != nil {
					return err
				}
				n := pending
				pending = 0
				return emit(jsonJob{rec: rec, problems: probs, bytes: n, record: true})
			}, func(n int64) { pending += n })
			if err != nil {
				return err
			}
			if len(probs) > 0 || pending > 0 {
				if err := emit(jsonJob{problems: probs, bytes: pending}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return s.scanRecords(ctx, produce)
}

// parser returns the record rules of the task.
func (s *scanner) parser() func(file string, line int, b []byte) (record, []Problem) {
	if s.task == Instruct {
		return parseInstruct
	}
	return parseChat
}

// scanRecords encodes the chat or instruct records produce emits, in
// order, on the scanner's workers.
func (s *scanner) scanRecords(ctx context.Context, produce func(ctx context.Context, emit func(jsonJob) error) error) error {
	work := func(j jsonJob) jsonResult {
		r := jsonResult{rec: j.rec, problems: j.problems, bytes: j.bytes, record: j.record}
		if len(j.problems) > 0 || j.rec.file == "" {
			return r
		}
		if s.task == Instruct {
			r.enc = s.m.encodeInstruct(j.rec.prompt, j.rec.response)
			return r
		}
		enc, err := s.m.encodeChat(j.rec.msgs, s.opt.ChatLoss)
		if err != nil {
			r.problems = []Problem{j.rec.at(Problem{Field: "messages", Rule: RuleTemplate, Message: err.Error()})}
			return r
		}
		r.enc = enc
		return r
	}
	consume := func(r jsonResult) error {
		s.progress(r.bytes)
		for _, p := range r.problems {
			s.problem(p)
		}
		if s.checked != nil && r.record {
			s.checked()
		}
		if len(r.problems) > 0 || r.rec.file == "" {
			return nil
		}
		return s.example(r.rec.file, r.rec.line, r.enc)
	}
	where := func(j jsonJob) string { return fmt.Sprintf("%s:%d", j.rec.file, j.rec.line) }
	return orderedMap(ctx, s.opt.Workers, produce, work, where, consume)
}

// safeParse parses one line, turning a panic into an error naming it.
func safeParse(parse func(string, int, []byte) (record, []Problem), file string, line int, b []byte) (rec record, probs []Problem, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panicError(fmt.Sprintf("%s:%d", file, line), v)
		}
	}()
	rec, probs = parse(file, line, b)
	return rec, probs, nil
}
