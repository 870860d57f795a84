package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Page asks for one page of a listing: at most Limit rows (default 100, at
// most 1000), continuing after the page whose next-page token is Token (""
// for the first page). Tokens are opaque to callers; each listing refuses
// another's with ErrBadPageToken.
type Page struct {
	Limit int
	Token string
}

func (p Page) size() int {
	if p.Limit <= 0 {
		return 100
	}
	return min(p.Limit, 1000)
}

// encodeCursor makes the token of the page after the row whose sort key is
// v in the listing kind.
func encodeCursor(kind string, v any) string {
	b, _ := json.Marshal(v) //nolint:errcheck // ints, strings and structs of them
	return base64.RawURLEncoding.EncodeToString(append([]byte(kind+":"), b...))
}

// decodeCursor reads a token of the listing kind into v; an empty token
// leaves v alone.
func decodeCursor(kind, tok string, v any) error {
	if tok == "" {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	rest, ok := strings.CutPrefix(string(b), kind+":")
	if err != nil || !ok || json.Unmarshal([]byte(rest), v) != nil {
		return fmt.Errorf("page token %q: %w: pass the next_page_token of the previous page of this listing", tok, ErrBadPageToken)
	}
	return nil
}

// limitSQL bounds a query to n rows; n <= 0 does not bound it.
func limitSQL(n int) string {
	if n <= 0 {
		return ""
	}
	return " LIMIT " + strconv.Itoa(n)
}

// cut trims rows fetched with one more than limit, and reports whether
// another page follows.
func cut[T any](rows []T, limit int) ([]T, bool) {
	if len(rows) > limit {
		return rows[:limit], true
	}
	return rows, false
}

// PageEvents returns one page of the run's events with ID > afterID,
// oldest first, and the next page's token ("" after the last).
func (o ops) PageEvents(ctx context.Context, run string, afterID int64, p Page) ([]Event, string, error) {
	var after int64
	if err := decodeCursor("events", p.Token, &after); err != nil {
		return nil, "", err
	}
	evs, err := o.events(ctx, run, max(after, afterID), p.size()+1)
	if err != nil {
		return nil, "", err
	}
	evs, more := cut(evs, p.size())
	if !more {
		return evs, "", nil
	}
	return evs, encodeCursor("events", evs[len(evs)-1].ID), nil
}

// PageCheckpoints returns one page of the run's checkpoints in step order.
func (o ops) PageCheckpoints(ctx context.Context, run string, p Page) ([]Checkpoint, string, error) {
	after := -1
	if err := decodeCursor("checkpoints", p.Token, &after); err != nil {
		return nil, "", err
	}
	cks, err := o.checkpoints(ctx, run, after, p.size()+1)
	if err != nil {
		return nil, "", err
	}
	cks, more := cut(cks, p.size())
	if !more {
		return cks, "", nil
	}
	return cks, encodeCursor("checkpoints", cks[len(cks)-1].Step), nil
}

type promptCursor struct{ Step, Index int }

// PagePromptOutputs returns one page of the run's eval-prompt completions
// by step, then index.
func (o ops) PagePromptOutputs(ctx context.Context, run string, p Page) ([]PromptOutput, string, error) {
	after := promptCursor{Step: -1}
	if err := decodeCursor("prompt-outputs", p.Token, &after); err != nil {
		return nil, "", err
	}
	pos, err := o.promptOutputs(ctx, run, after, p.size()+1)
	if err != nil {
		return nil, "", err
	}
	pos, more := cut(pos, p.size())
	if !more {
		return pos, "", nil
	}
	last := pos[len(pos)-1]
	return pos, encodeCursor("prompt-outputs", promptCursor{last.Step, last.Index}), nil
}

// PageExperiments returns one page of the experiments by path.
func (o ops) PageExperiments(ctx context.Context, p Page) ([]Experiment, string, error) {
	var after string
	if err := decodeCursor("experiments", p.Token, &after); err != nil {
		return nil, "", err
	}
	es, err := o.experiments(ctx, after, p.size()+1)
	if err != nil {
		return nil, "", err
	}
	es, more := cut(es, p.size())
	if !more {
		return es, "", nil
	}
	return es, encodeCursor("experiments", es[len(es)-1].Path), nil
}

// PageMetrics returns one page of the run's step metrics in step order,
// with the evaluations of the same steps: the first page holds those up to
// its last step, the last page those after the previous page.
func (o ops) PageMetrics(ctx context.Context, run string, p Page) ([]StepMetric, []EvalMetric, string, error) {
	after := math.MinInt32
	if err := decodeCursor("metrics", p.Token, &after); err != nil {
		return nil, nil, "", err
	}
	steps, err := o.steps(ctx, run, after, p.size()+1)
	if err != nil {
		return nil, nil, "", err
	}
	steps, more := cut(steps, p.size())
	upTo, next := math.MaxInt32, ""
	if more {
		upTo = steps[len(steps)-1].Step
		next = encodeCursor("metrics", upTo)
	}
	evals, err := o.evals(ctx, run, after, upTo)
	if err != nil {
		return nil, nil, "", err
	}
	return steps, evals, next, nil
}
