package dataset

import (
	"context"
	"fmt"
	"io"
	"os"
)

// MinCPTTokens is the smallest continued-pretraining corpus the guidance
// recommends.
const MinCPTTokens = 1_500_000

// maxProblems bounds the problems a Report keeps (all are counted).
const maxProblems = 1000

// Report is the result of Validate.
type Report struct {
	Task            Task   `json:"task"`
	Model           string `json:"model"`
	Data            string `json:"data"`
	Files           int    `json:"files"`
	ContextLength   int    `json:"context_length"`
	ModelMaxContext int    `json:"model_max_context,omitempty"`
	Overlong        string `json:"overlong_policy,omitempty"`
	BatchRows       int    `json:"batch_rows"`
	Stats           Stats  `json:"stats"`
	// StepsPerEpoch is the number of optimizer steps of BatchRows rows per
	// epoch after packing.
	StepsPerEpoch int64 `json:"steps_per_epoch"`
	// Problems are the bad records (at most 1000; ProblemCount counts all).
	Problems     []Problem `json:"problems"`
	ProblemCount int       `json:"problem_count"`
	Warnings     []string  `json:"warnings"`
}

// OK reports whether the data has no problems.
func (r *Report) OK() bool { return r.ProblemCount == 0 }

func (r *Report) addProblem(p Problem) {
	r.ProblemCount++
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, p)
	}
}

// collector applies the overlong policy to examples and accounts for them.
type collector struct {
	ctxLen   int
	overlong string
	stats    Stats
	lengths  []int32 // every valid example, before truncation
	kept     func(e encoded) error
}

func (c *collector) add(e encoded) error {
	c.lengths = append(c.lengths, int32(len(e.toks)))
	if len(e.toks) > c.ctxLen {
		c.stats.Overlong++
		if c.overlong == OverlongDrop {
			c.stats.Dropped++
			return nil
		}
		e.toks = e.toks[:c.ctxLen]
		if scoredTokens(e.toks) == 0 {
			c.stats.Dropped++
			return nil
		}
		c.stats.Truncated++
	}
	return c.kept(e)
}

// scoredTokens counts the trained positions of one segment the engine
// scores: all but the first.
func scoredTokens(toks []uint32) int64 {
	var n int64
	for i := 1; i < len(toks); i++ {
		if toks[i]&trainedBit != 0 {
			n++
		}
	}
	return n
}

// cptCounter accounts for a cpt token stream cut into rows.
type cptCounter struct {
	ctx      int64
	total    int64
	docStart int64
	docs     int64
	pieces   int64 // segments: document pieces over all rows
	lengths  []int32
}

func (c *cptCounter) add(n int, docEnd bool) {
	c.total += int64(n)
	if docEnd {
		s, e := c.docStart, c.total
		c.pieces += (e-1)/c.ctx - s/c.ctx + 1
		c.docs++
		c.lengths = append(c.lengths, int32(min(e-s, 1<<31-1)))
		c.docStart = e
	}
}

func (c *cptCounter) stats() Stats {
	rows := (c.total + c.ctx - 1) / c.ctx
	st := Stats{Examples: c.docs, Tokens: c.total, TrainedTokens: c.total - c.pieces, Rows: rows, Lengths: percentiles(c.lengths)}
	if rows > 0 {
		st.Efficiency = float64(c.total) / float64(rows*c.ctx)
	}
	return st
}

// Validate checks the data at dataPath for task against the model in
// modelDir without writing anything: it reports every bad record, the
// overlong examples, the token and packing statistics and the guidance
// warnings. The error is for what stops validation itself (an unreadable
// model or data path, a chat model without a chat template).
func Validate(ctx context.Context, modelDir string, task Task, dataPath string, opt Options) (*Report, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := loadModel(modelDir, task, opt.ContextLength)
	if err != nil {
		return nil, err
	}
	if err := checkWeights(modelDir); err != nil {
		return nil, err
	}
	src, probs, err := openSource(ctx, dataPath, task, opt, false)
	if err != nil {
		return nil, err
	}
	r := &Report{Task: task, Model: modelDir, Data: dataPath, Files: len(src.files), ContextLength: m.ctxLen,
		ModelMaxContext: m.maxContext, BatchRows: opt.BatchRows, Problems: []Problem{}, Warnings: []string{}}
	if task != CPT {
		r.Overlong = opt.Overlong
	}
	for _, p := range probs {
		r.addProblem(p)
	}
	s := &scanner{m: m, task: task, opt: opt, progress: func(int64) {}, problem: r.addProblem}
	var pr Progress
	if opt.Progress != nil {
		pr.TotalBytes = src.size()
		s.progress = func(n int64) { pr.BytesRead += n }
		s.checked = func() { pr.Records++; opt.Progress(pr) }
	}
	var keptLens []int
	col := &collector{ctxLen: m.ctxLen, overlong: opt.Overlong}
	col.kept = func(e encoded) error {
		keptLens = append(keptLens, len(e.toks))
		col.stats.Tokens += int64(len(e.toks))
		col.stats.TrainedTokens += scoredTokens(e.toks)
		return nil
	}
	s.example = func(_ string, _ int, e encoded) error { return col.add(e) }
	cc := &cptCounter{ctx: int64(m.ctxLen)}
	s.tokens = func(ids []int, docEnd bool) error { cc.add(len(ids), docEnd); return nil }
	s.maxTokens = MaxTokens
	if err := s.scanFiles(ctx, src); err != nil {
		return nil, err
	}
	if opt.Progress != nil {
		opt.Progress(pr)
	}
	if task == CPT {
		r.Stats = cc.stats()
	} else {
		st := col.stats
		st.Examples = int64(len(keptLens))
		st.Lengths = percentiles(col.lengths)
		rows := Pack(keptLens, m.ctxLen)
		st.Rows = int64(len(rows))
		if st.Rows > 0 {
			st.Efficiency = float64(st.Tokens) / float64(st.Rows*int64(m.ctxLen))
		}
		r.Stats = st
		if st.Tokens > MaxTokens {
			r.addProblem(Problem{File: dataPath, Rule: RuleTooManyTokens, Message: fmt.Sprintf("the data holds %d tokens, more than the %d accepted", st.Tokens, int64(MaxTokens))})
		}
	}
	r.StepsPerEpoch = (r.Stats.Rows + int64(opt.BatchRows) - 1) / int64(opt.BatchRows)
	r.Warnings = guidance(task, m, r.Stats, src.textFiles())
	return r, nil
}

// guidance returns the product's warnings for a data set.
func guidance(task Task, m *model, st Stats, files []string) []string {
	w := []string{}
	switch task {
	case CPT:
		if st.Tokens < MinCPTTokens {
			w = append(w, fmt.Sprintf("the corpus holds %d tokens; continued pre-training wants at least %d", st.Tokens, MinCPTTokens))
		}
		for _, f := range files {
			if fi, err := os.Stat(f); err == nil && fi.Size() > 256<<20 {
				w = append(w, fmt.Sprintf("%s is %d MB; continued pre-training files are best 60-256 MB each", f, fi.Size()>>20))
			}
		}
	default:
		// One full row of the context length trained at: the model's
		// maximum unless the run chose shorter rows to fit in memory.
		if st.Tokens < int64(m.ctxLen) {
			w = append(w, fmt.Sprintf("the data holds %d tokens, less than one full context length (%d tokens per row); chat and instruction data should hold at least that much", st.Tokens, m.ctxLen))
		}
		if st.Dropped > 0 {
			w = append(w, fmt.Sprintf("%d examples longer than the context length (%d tokens) are dropped", st.Dropped, m.ctxLen))
		}
		if st.Truncated > 0 {
			w = append(w, fmt.Sprintf("%d examples longer than the context length (%d tokens) are truncated", st.Truncated, m.ctxLen))
		}
	}
	return w
}

// WriteText writes the report for people: one line per problem as
// file:line: field: message [rule], then the summary and the warnings.
func (r *Report) WriteText(w io.Writer) {
	for _, p := range r.Problems {
		fmt.Fprintln(w, p.String())
	}
	if r.ProblemCount > len(r.Problems) {
		fmt.Fprintf(w, "... and %d more problems\n", r.ProblemCount-len(r.Problems))
	}
	st := r.Stats
	unit := "examples"
	if r.Task == CPT {
		unit = "documents"
	}
	fmt.Fprintf(w, "task %s, %d file(s), context length %d", r.Task, r.Files, r.ContextLength)
	if r.ModelMaxContext > 0 {
		fmt.Fprintf(w, " (model max %d)", r.ModelMaxContext)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%s: %d  tokens: %d  trained tokens: %d\n", unit, st.Examples, st.Tokens, st.TrainedTokens)
	fmt.Fprintf(w, "lengths: p50 %d  p90 %d  p99 %d  max %d\n", st.Lengths.P50, st.Lengths.P90, st.Lengths.P99, st.Lengths.Max)
	if r.Task != CPT {
		fmt.Fprintf(w, "overlong: %d (policy %s: %d truncated, %d dropped)\n", st.Overlong, r.Overlong, st.Truncated, st.Dropped)
	}
	fmt.Fprintf(w, "rows per epoch: %d  packing efficiency: %.1f%%  optimizer steps per epoch at %d rows/step: %d\n",
		st.Rows, 100*st.Efficiency, r.BatchRows, r.StepsPerEpoch)
	for _, s := range r.Warnings {
		fmt.Fprintln(w, "warning:", s)
	}
	if r.OK() {
		fmt.Fprintln(w, "ok: no problems")
	} else {
		fmt.Fprintf(w, "%d problem(s)\n", r.ProblemCount)
	}
}
