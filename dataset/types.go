package dataset

import (
	"fmt"
	"slices"
	"strings"
)

// Task is a training task type.
type Task string

// The task types.
const (
	Chat     Task = "chat"
	Instruct Task = "instruct"
	CPT      Task = "cpt"
)

// ParseTask accepts chat|instruct|cpt and the hosted product's names
// CHAT_COMPLETION, INSTRUCTION_FINETUNE and CONTINUED_PRETRAIN.
func ParseTask(s string) (Task, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "chat", "chat_completion":
		return Chat, nil
	case "instruct", "instruction_finetune":
		return Instruct, nil
	case "cpt", "continued_pretrain":
		return CPT, nil
	}
	return "", fmt.Errorf("dataset: unknown task %q (want chat, instruct or cpt)", s)
}

// IgnoreIndex is the label of a position that is not trained.
const IgnoreIndex = -100

// MaxTokens is the largest dataset accepted, in tokens.
const MaxTokens = 10_000_000_000

// Overlong policies.
const (
	OverlongDrop     = "drop"
	OverlongTruncate = "truncate"
)

// Chat loss modes.
const (
	LossAssistant     = "assistant"
	LossLastAssistant = "last"
	LossAll           = "all"
)

// Options are the settings shared by Validate, Prepare and Preview.
type Options struct {
	// ContextLength is the row length in tokens; 0 means the model's
	// max_position_embeddings. A training run passes the length it chose
	// (the maximum, shortened to what fits in memory).
	ContextLength int
	// Overlong is what happens to a chat/instruct example longer than the
	// context length: "drop" (default) or "truncate" (keep the first
	// ContextLength tokens). cpt rows are always cut.
	Overlong string
	// ChatLoss selects the trained tokens of chat data: "assistant"
	// (default), "last" or "all".
	ChatLoss string
	// BatchRows is the number of rows per optimizer step, used for the
	// steps-per-epoch estimate (default 1).
	BatchRows int
	// EvalData is a separate eval file or folder of the same task type.
	EvalData string
	// EvalFraction holds out this fraction of the examples (of the rows for
	// cpt) as eval data, chosen by EvalSeed. Ignored when EvalData is set.
	EvalFraction float64
	EvalSeed     uint64
	// Workers is the number of tokenizing goroutines (default GOMAXPROCS).
	Workers int
	// Split is the split read from a Hugging Face dataset (default
	// "train"), EvalSplit that of EvalData (default "validation", else
	// "test"); Version the Delta table version (nil: the latest).
	Split, EvalSplit string
	Version          *int64
	// Progress, when not nil, receives Validate's progress on the
	// validating goroutine after each record and once at the end, so it
	// must be cheap (copy the value; throttle elsewhere).
	Progress func(Progress)
}

// Progress is how far Validate has come: the bytes of data read of the
// data's total (0 when unknown), and the records checked (JSONL lines,
// table rows, cpt documents), valid or not.
type Progress struct {
	BytesRead  int64 `json:"bytes_read"`
	TotalBytes int64 `json:"total_bytes"`
	Records    int64 `json:"records"`
}

func (o Options) withDefaults() (Options, error) {
	switch o.Overlong {
	case "":
		o.Overlong = OverlongDrop
	case OverlongDrop, OverlongTruncate:
	default:
		return o, fmt.Errorf("dataset: overlong must be %q or %q, got %q", OverlongDrop, OverlongTruncate, o.Overlong)
	}
	switch o.ChatLoss {
	case "":
		o.ChatLoss = LossAssistant
	case LossAssistant, LossLastAssistant, LossAll:
	default:
		return o, fmt.Errorf("dataset: chat loss must be %q, %q or %q, got %q", LossAssistant, LossLastAssistant, LossAll, o.ChatLoss)
	}
	if o.BatchRows <= 0 {
		o.BatchRows = 1
	}
	if o.EvalFraction < 0 || o.EvalFraction >= 1 {
		return o, fmt.Errorf("dataset: eval fraction must be in [0, 1), got %g", o.EvalFraction)
	}
	if o.ContextLength < 0 {
		return o, fmt.Errorf("dataset: context length must be positive, got %d", o.ContextLength)
	}
	return o, nil
}

// Example is one tokenized example before packing. Labels has the length of
// InputIDs: the token where trained, IgnoreIndex elsewhere.
type Example struct {
	Text     string `json:"text"`
	InputIDs []int  `json:"input_ids"`
	Labels   []int  `json:"labels"`
}

// Row is one packed training row of exactly the context length.
// SegmentIDs numbers the examples (documents) of the row 1, 2, ...; the
// padding tail has segment 0 and label IgnoreIndex.
type Row struct {
	InputIDs   []int
	Labels     []int
	SegmentIDs []int
}

// Problem is one bad record. Line is 1-based; 0 when the problem concerns a
// whole file.
type Problem struct {
	File string `json:"file"`
	Line int    `json:"line"`
	// RowGroup and Row (1-based, Row counted over the file) place a
	// problem in a Parquet file; Line is then 0.
	RowGroup int    `json:"row_group,omitempty"`
	Row      int64  `json:"row,omitempty"`
	Field    string `json:"field,omitempty"`
	Rule     string `json:"rule"`
	Message  string `json:"message"`
}

func (p Problem) String() string {
	loc := p.File
	if p.Line > 0 {
		loc = fmt.Sprintf("%s:%d", p.File, p.Line)
	} else if p.Row > 0 {
		loc = fmt.Sprintf("%s: row group %d, row %d", p.File, p.RowGroup, p.Row)
	}
	if p.Field != "" {
		return fmt.Sprintf("%s: %s: %s [%s]", loc, p.Field, p.Message, p.Rule)
	}
	return fmt.Sprintf("%s: %s [%s]", loc, p.Message, p.Rule)
}

// Problem rules.
const (
	RuleInvalidJSON    = "invalid_json"
	RuleMissingColumn  = "missing_column"
	RuleInvalidUTF8    = "invalid_utf8"
	RuleMissingKey     = "missing_key"
	RuleExtraKey       = "extra_key"
	RuleWrongType      = "wrong_type"
	RuleEmptyContent   = "empty_content"
	RuleInvalidRole    = "invalid_role"
	RuleRoleOrder      = "role_order"
	RuleNoAssistant    = "no_assistant"
	RuleLastAssistant  = "last_not_assistant"
	RuleEmptyFile      = "empty_file"
	RuleNoFiles        = "no_files"
	RuleTemplate       = "template_error"
	RuleTooManyTokens  = "too_many_tokens"
	RuleNoTrainedToken = "no_trained_tokens"
)

// Percentiles of example lengths in tokens.
type Percentiles struct {
	P50 int `json:"p50"`
	P90 int `json:"p90"`
	P99 int `json:"p99"`
	Max int `json:"max"`
}

// Stats describes a dataset (or one split of it) as the trainer sees it.
type Stats struct {
	// Examples kept (cpt: documents starting in the split's rows).
	Examples int64 `json:"examples"`
	// Tokens is the number of non-pad input tokens per epoch.
	Tokens int64 `json:"tokens"`
	// TrainedTokens is the number of positions scored per epoch.
	TrainedTokens int64 `json:"trained_tokens"`
	// Rows per epoch, each ContextLength tokens.
	Rows int64 `json:"rows"`
	// Efficiency is Tokens / (Rows * ContextLength).
	Efficiency float64 `json:"packing_efficiency"`
	// Overlong counts examples longer than the context length; Truncated and
	// Dropped what became of them (Dropped also counts truncated examples
	// left with nothing to train).
	Overlong  int64 `json:"overlong"`
	Truncated int64 `json:"truncated"`
	Dropped   int64 `json:"dropped"`
	// Lengths are the example (cpt: document) lengths before truncation.
	Lengths Percentiles `json:"lengths"`
}

// percentiles computes nearest-rank percentiles of lengths (sorted in place).
func percentiles(lengths []int32) Percentiles {
	if len(lengths) == 0 {
		return Percentiles{}
	}
	slices.Sort(lengths)
	at := func(p float64) int {
		i := int(p*float64(len(lengths)) + 0.999999999)
		if i < 1 {
			i = 1
		}
		if i > len(lengths) {
			i = len(lengths)
		}
		return int(lengths[i-1])
	}
	return Percentiles{P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: int(lengths[len(lengths)-1])}
}
