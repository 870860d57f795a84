// Package train runs one fine-tune: it prepares the data, trains an engine
// model with AdamW on packed rows, evaluates, checkpoints, completes eval
// prompts and writes the final Hugging Face model directory. A run's work
// directory is all of its state: calling Run again on the same directory
// resumes from the last checkpoint and ends with the same weights as an
// uninterrupted run. Cancelling ctx stops within one optimizer step.
package train

import (
	"fmt"
	"strconv"
	"strings"

	"hone/optim"
)

// Duration is how long to train: exactly one field is set.
type Duration struct {
	Epochs  float64 // "3ep"
	Batches int     // "500ba": optimizer steps
	Tokens  int64   // "2_000_000tok": input tokens seen
}

// ParseDuration reads the hosted product's duration forms: "3ep", "500ba",
// "2_000_000tok" (underscores allowed as digit separators).
func ParseDuration(s string) (Duration, error) {
	t := strings.ReplaceAll(strings.TrimSpace(s), "_", "")
	bad := fmt.Errorf("training_duration %q: want a number followed by ep (epochs), ba (optimizer steps) or tok (tokens), e.g. 3ep, 500ba, 2_000_000tok", s)
	switch {
	case strings.HasSuffix(t, "tok"):
		n, err := strconv.ParseInt(strings.TrimSuffix(t, "tok"), 10, 64)
		if err != nil || n <= 0 {
			return Duration{}, bad
		}
		return Duration{Tokens: n}, nil
	case strings.HasSuffix(t, "ba"):
		n, err := strconv.Atoi(strings.TrimSuffix(t, "ba"))
		if err != nil || n <= 0 {
			return Duration{}, bad
		}
		return Duration{Batches: n}, nil
	case strings.HasSuffix(t, "ep"):
		f, err := strconv.ParseFloat(strings.TrimSuffix(t, "ep"), 64)
		if err != nil || !(f > 0) || f > 1000 {
			return Duration{}, bad
		}
		return Duration{Epochs: f}, nil
	}
	return Duration{}, bad
}

func (d Duration) String() string {
	switch {
	case d.Tokens > 0:
		return fmt.Sprintf("%dtok", d.Tokens)
	case d.Batches > 0:
		return fmt.Sprintf("%dba", d.Batches)
	default:
		return strconv.FormatFloat(d.Epochs, 'g', -1, 64) + "ep"
	}
}

// Spec is everything that determines a run's result.
type Spec struct {
	ModelDir    string // base model: an HF directory (callers resolve names)
	InitWeights string // optional HF directory whose weights replace the base's (custom_weights_path)
	Task        string // "chat", "instruct" or "cpt"
	TrainData   string
	EvalData    string // optional, same format as TrainData
	Duration    Duration

	LearningRate  float64
	ContextLength int // tokens per row; 0 = min(model max, 2048)
	BatchRows     int // rows per micro-batch; default 1
	GradAccum     int // micro-batches per optimizer step; default 1
	Seed          uint64

	CheckpointEvery int // optimizer steps between checkpoints; 0 = at each epoch end only
	KeepCheckpoints int // newest checkpoints kept; default 3
	EvalPrompts     []string

	AdamW       optim.AdamWConfig // zero = optim.DefaultAdamW
	WarmupFrac  float64           // of total steps; default 0.02
	Decay       string            // "linear" (default) or "cosine"
	FinalLRMult float64           // default 0
	Recompute   bool              // activation recomputation (less memory, ~30% more compute)
	Precision   string            // "fp32" (default) or "bf16" (bf16 matmuls, fp32 master weights)
	Threads     int               // 0 = all cores
}

// withDefaults fills zero fields and checks the rest, naming the field.
func (s Spec) withDefaults() (Spec, error) {
	if s.ModelDir == "" {
		return s, fmt.Errorf("model: required")
	}
	if s.TrainData == "" {
		return s, fmt.Errorf("train_data_path: required")
	}
	if s.Task == "" {
		s.Task = "chat"
	}
	if s.Duration == (Duration{}) {
		s.Duration = Duration{Epochs: 1}
	}
	if s.LearningRate == 0 {
		s.LearningRate = 1e-5
	}
	if !(s.LearningRate > 0) || s.LearningRate > 1 {
		return s, fmt.Errorf("learning_rate: %g must be in (0, 1]", s.LearningRate)
	}
	if s.ContextLength < 0 {
		return s, fmt.Errorf("context_length: %d must be positive", s.ContextLength)
	}
	if s.BatchRows == 0 {
		s.BatchRows = 1
	}
	if s.GradAccum == 0 {
		s.GradAccum = 1
	}
	if s.BatchRows < 0 || s.GradAccum < 0 || s.CheckpointEvery < 0 || s.KeepCheckpoints < 0 {
		return s, fmt.Errorf("batch_rows, grad_accum, checkpoint_every and keep_checkpoints must not be negative")
	}
	if s.KeepCheckpoints == 0 {
		s.KeepCheckpoints = 3
	}
	if s.WarmupFrac == 0 {
		s.WarmupFrac = 0.02
	}
	if s.WarmupFrac < 0 || s.WarmupFrac >= 1 {
		return s, fmt.Errorf("warmup: fraction %g must be in [0, 1)", s.WarmupFrac)
	}
	switch s.Precision {
	case "":
		s.Precision = "fp32"
	case "fp32", "bf16":
	default:
		return s, fmt.Errorf("precision: %q must be fp32 or bf16", s.Precision)
	}
	if s.AdamW == (optim.AdamWConfig{}) {
		s.AdamW = optim.DefaultAdamW
	}
	if err := s.AdamW.Validate(); err != nil {
		return s, err
	}
	return s, nil
}
