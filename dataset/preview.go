package dataset

import (
	"context"
	"errors"
)

var errLimit = errors.New("dataset: preview limit reached")

// Preview formats and tokenizes the data and calls emit with each example
// before packing and before the overlong policy (cpt: each context-length
// row of the token stream, the last one unpadded), at most limit times
// (limit <= 0: all). Bad records go to problem and are skipped.
func Preview(ctx context.Context, modelDir string, task Task, dataPath string, opt Options, limit int, emit func(Example) error, problem func(Problem)) error {
	opt, err := opt.withDefaults()
	if err != nil {
		return err
	}
	m, err := loadModel(modelDir, task, opt.ContextLength)
	if err != nil {
		return err
	}
	src, probs, err := openSource(ctx, dataPath, task, opt, false)
	if err != nil {
		return err
	}
	if problem == nil {
		problem = func(Problem) {}
	}
	for _, p := range probs {
		problem(p)
	}
	n := 0
	out := func(ex Example) error {
		if err := emit(ex); err != nil {
			return err
		}
		n++
		if limit > 0 && n >= limit {
			return errLimit
		}
		return nil
	}
	s := &scanner{m: m, task: task, opt: opt, progress: func(int64) {}, problem: problem}
	s.example = func(_ string, _ int, e encoded) error { return out(e.example()) }
	var row []int
	flush := func() error {
		ids := row
		row = nil
		labels := append([]int(nil), ids...)
		return out(Example{Text: m.tok.Decode(ids, false), InputIDs: ids, Labels: labels})
	}
	s.tokens = func(ids []int, _ bool) error {
		for len(ids) > 0 {
			k := min(m.ctxLen-len(row), len(ids))
			row = append(row, ids[:k]...)
			ids = ids[k:]
			if len(row) == m.ctxLen {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err = s.scanFiles(ctx, src)
	if err == nil && len(row) > 0 {
		err = flush()
	}
	if errors.Is(err, errLimit) {
		return nil
	}
	return err
}
