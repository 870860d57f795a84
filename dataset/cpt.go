package dataset

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"unicode/utf8"
)

// cptChunk is the size of the pieces a large document is tokenized in.
// A variable so tests can exercise chunking on small inputs.
var cptChunk = 256 << 10

type cptJob struct {
	file     string
	offset   int64 // of chunk in file
	chunk    []byte
	first    bool // the chunk starts a document
	last     bool // the chunk ends a document
	bytes    int64
	problems []Problem
}

type cptResult struct {
	ids      []int
	last     bool
	bytes    int64
	problems []Problem
}

// textProducer emits the documents of text files: each file is checked
// for UTF-8, then read chunk by chunk.
func textProducer(files []string) func(ctx context.Context, emit func(cptJob) error) error {
	return func(ctx context.Context, emit func(cptJob) error) error {
		for _, f := range files {
			prob, size, err := checkTextFile(f)
			if err != nil {
				return err
			}
			if prob != nil {
				if err := emit(cptJob{problems: []Problem{*prob}, bytes: size}); err != nil {
					return err
				}
				continue
			}
			var offset int64
			if err := readChunks(f, func(chunk []byte, first, last bool) error {
				j := cptJob{file: f, offset: offset, chunk: chunk, first: first, last: last, bytes: int64(len(chunk))}
				offset += int64(len(chunk))
				return emit(j)
			}); err != nil {
				return err
			}
		}
		return nil
	}
}

// scanDocs tokenizes the document chunks produce emits, in order, on the
// scanner's workers; where names the data in a too-many-tokens problem.
func (s *scanner) scanDocs(ctx context.Context, where string, produce func(ctx context.Context, emit func(cptJob) error) error) error {
	var total int64
	stopped := false
	work := func(j cptJob) cptResult {
		r := cptResult{last: j.last, bytes: j.bytes, problems: j.problems}
		if j.problems != nil {
			return r
		}
		if j.first && s.m.sp.AddBOS && s.m.sp.BOS >= 0 {
			r.ids = append(r.ids, s.m.sp.BOS)
		}
		r.ids = append(r.ids, s.m.tok.Encode(string(j.chunk), false)...)
		if j.last {
			r.ids = append(r.ids, s.m.sp.EOS)
		}
		return r
	}
	consume := func(r cptResult) error {
		s.progress(r.bytes)
		if s.checked != nil && r.last {
			s.checked()
		}
		for _, p := range r.problems {
			s.problem(p)
		}
		if r.problems != nil || stopped {
			return nil
		}
		total += int64(len(r.ids))
		if s.maxTokens > 0 && total > s.maxTokens {
			stopped = true
			s.problem(Problem{File: where, Rule: RuleTooManyTokens, Message: fmt.Sprintf("the data holds more than %d tokens, the most accepted", s.maxTokens)})
			return errTooMany
		}
		return s.tokens(r.ids, r.last)
	}
	jobWhere := func(j cptJob) string {
		if j.file == "" { // a table's rows: the table names it
			return where
		}
		return fmt.Sprintf("%s (bytes %d to %d)", j.file, j.offset, j.offset+int64(len(j.chunk)))
	}
	err := orderedMap(ctx, s.opt.Workers, produce, work, jobWhere, consume)
	if errors.Is(err, errTooMany) {
		return nil
	}
	return err
}

var errTooMany = errors.New("dataset: too many tokens")

// checkTextFile streams f and reports a problem when it is empty, blank or
// not valid UTF-8 (with the line of the first bad byte).
func checkTextFile(f string) (*Problem, int64, error) {
	fh, err := os.Open(f)
	if err != nil {
		return nil, 0, fmt.Errorf("dataset: %w", err)
	}
	defer fh.Close()
	r := bufio.NewReaderSize(fh, 1<<16)
	buf := make([]byte, 1<<20)
	var carry []byte
	var size int64
	line := 1
	nonBlank := false
	for {
		n, rerr := io.ReadFull(r, buf)
		size += int64(n)
		data := append(carry, buf[:n]...)
		eof := errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF)
		if rerr != nil && !eof {
			return nil, 0, fmt.Errorf("dataset: %s: %w", f, rerr)
		}
		end := len(data)
		if !eof {
			end = runeBoundary(data)
		}
		if !utf8.Valid(data[:end]) {
			at := invalidUTF8At(data[:end])
			line += bytes.Count(data[:at], []byte("\n"))
			return &Problem{File: f, Line: line, Rule: RuleInvalidUTF8, Message: "the file is not valid UTF-8"}, size, nil
		}
		line += bytes.Count(data[:end], []byte("\n"))
		if !nonBlank && len(bytes.TrimSpace(data[:end])) > 0 {
			nonBlank = true
		}
		carry = append(carry[:0:0], data[end:]...)
		if eof {
			break
		}
	}
	if !nonBlank {
		return &Problem{File: f, Rule: RuleEmptyFile, Message: "the file is empty or blank"}, size, nil
	}
	return nil, size, nil
}

// runeBoundary returns the largest i <= len(b) such that b[:i] does not end
// inside an incomplete UTF-8 sequence.
func runeBoundary(b []byte) int {
	for k := 1; k <= utf8.UTFMax && k <= len(b); k++ {
		c := b[len(b)-k]
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-k:]) {
				return len(b) - k
			}
			return len(b)
		}
	}
	return len(b)
}

// readChunks reads f in pieces of about cptChunk bytes, each cut at a safe
// boundary (safeCut), and calls fn with each; first and last mark the start
// and end of the document.
func readChunks(f string, fn func(chunk []byte, first, last bool) error) error {
	fh, err := os.Open(f)
	if err != nil {
		return fmt.Errorf("dataset: %w", err)
	}
	defer fh.Close()
	return chunks(fh, f, fn)
}

// chunks is readChunks on a reader; name labels its errors.
func chunks(fh io.Reader, f string, fn func(chunk []byte, first, last bool) error) error {
	var carry []byte
	first := true
	for {
		buf := make([]byte, len(carry)+cptChunk)
		copy(buf, carry)
		n, rerr := io.ReadFull(fh, buf[len(carry):])
		data := buf[:len(carry)+n]
		eof := errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF)
		if rerr != nil && !eof {
			return fmt.Errorf("dataset: %s: %w", f, rerr)
		}
		if eof {
			return fn(data, first, true)
		}
		cut := safeCut(data)
		carry = append([]byte(nil), data[cut:]...)
		if err := fn(data[:cut:cut], first, false); err != nil {
			return err
		}
		first = false
	}
}

// safeCut picks where to end a chunk of a larger document, searching the
// second half of b backwards: just after a newline followed by an ASCII
// letter or digit; else at a single space between ASCII letters; else at a
// UTF-8 character boundary. See the package documentation.
func safeCut(b []byte) int {
	lo := len(b) / 2
	for p := len(b) - 1; p > lo; p-- {
		if b[p-1] == '\n' && isAlnum(b[p]) {
			return p
		}
	}
	for p := len(b) - 2; p > lo; p-- {
		if b[p] == ' ' && isLetter(b[p-1]) && isLetter(b[p+1]) {
			return p
		}
	}
	return runeBoundary(b)
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isAlnum(c byte) bool  { return isLetter(c) || c >= '0' && c <= '9' }
