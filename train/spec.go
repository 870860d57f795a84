// Package train runs one fine-tune: it prepares the data, trains an engine
// model with AdamW on packed rows, evaluates, checkpoints, completes eval
// prompts and writes the final Hugging Face model directory. A run's work
// directory is all of its state: calling Run again on the same directory
// resumes from the last checkpoint and ends with the same weights as an
// uninterrupted run. Cancelling ctx stops within one optimizer step.
package train

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"hone/engine"
	"hone/optim"
	"hone/settings"
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
	bad := &settings.Error{Setting: "training_duration", Problem: fmt.Sprintf("%q is not a duration", s),
		Fix: fmt.Sprintf("use a positive number followed by ep (epochs, at most %d), ba (optimizer steps) or tok (tokens), e.g. 3ep, 500ba, 2_000_000tok", settings.MaxEpochs)}
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
		if err != nil || !(f > 0) || f > settings.MaxEpochs {
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

// Spec is everything that determines a run's result. Unset (zero or nil)
// settings take package settings' defaults; see Resolve.
type Spec struct {
	ModelDir    string // base model: an HF directory (callers resolve names)
	InitWeights string // optional HF directory whose weights replace the base's (custom_weights_path)
	Task        string // "chat" (default), "instruct" or "cpt"
	TrainData   string
	EvalData    string // optional, same format as TrainData
	// Tables only: the splits read (default train; validation, else test)
	// and the Delta version of TrainData (nil: the latest). Omitted from
	// the fingerprint when unset, so older checkpoints still resume.
	TrainSplit   string `json:",omitempty"`
	EvalSplit    string `json:",omitempty"`
	TrainVersion *int64 `json:",omitempty"`
	Duration     Duration

	LearningRate  float64
	ContextLength int // tokens per row; 0 = the model's maximum, shortened to what fits (chooseContext)
	// legacyContext: ContextLength is the default of a run started before
	// the default was the model's maximum (legacyDefaultContext), whose
	// checkpoints' settings fingerprint has an unset length.
	legacyContext bool
	BatchRows     int // rows per micro-batch
	GradAccum     int // micro-batches per optimizer step
	Seed          uint64

	CheckpointEvery int // optimizer steps between checkpoints; 0 = at each epoch end only
	KeepCheckpoints int // newest checkpoints kept
	EvalPrompts     []string

	AdamW optim.AdamWConfig // zero = optim.DefaultAdamW; otherwise used as given (0 decay, 0 = no clipping)
	// Optimizer is "adamw" (the default, also when empty) or "lionw",
	// whose settings are in LionW (nil: optim.DefaultLionW). Both are
	// omitted from the fingerprint of an AdamW run, so its older
	// checkpoints still resume.
	Optimizer   string             `json:",omitempty"`
	LionW       *optim.LionWConfig `json:",omitempty"`
	WarmupFrac  *float64           // of total steps, rounded up; nil = the default, 0 = no warmup
	Decay       string             // "linear", "cosine" or "constant"
	FinalLRMult float64
	Recompute   bool   // activation recomputation (less memory, ~30% more compute)
	Precision   string // "fp32" or "bf16" (bf16 matmuls, fp32 master weights)
	Threads     int    // 0 = all cores

	// Method "full" trains every weight; "lora" trains a LoRA adapter
	// (settings in LoRA) on the frozen base, continuing the PEFT adapter
	// directory Adapter when set. Both are omitted from the fingerprint of
	// a full run, so its older checkpoints still resume.
	Method  string    `json:",omitempty"`
	LoRA    *LoRASpec `json:",omitempty"`
	Adapter string    `json:",omitempty"`
	// AdapterOnly (method lora) writes the final adapter alone, without
	// the merged model, which needs the whole base in fp32 to write.
	AdapterOnly bool `json:",omitempty"`

	// shardRanks is the number of ranks a run with sharded parameters
	// spreads its state over (DistOptions.ShardParameters), for planning
	// its memory; not part of the spec's JSON or fingerprint.
	shardRanks int
	// zero1Ranks is the number of ranks a run with a sharded optimizer
	// spreads its optimizer state over (DistOptions.ShardOptimizer), for
	// planning a rank's memory; not in the JSON or fingerprint either.
	zero1Ranks int
	// nodes is the number of ranks the run trains on (OnNodes), for the
	// advice of a refusal for memory; not part of the JSON either.
	nodes int
}

// ShardedOver returns s planned as one of n ranks with sharded parameters
// (DistOptions.ShardParameters): Validate then checks that a rank's share
// of the state, not the whole of it, fits in memory with its rows.
func (s Spec) ShardedOver(n int) Spec {
	s.shardRanks = n
	return s
}

// OptimizerShardedOver returns s planned as one of n ranks with a
// sharded optimizer (DistOptions.ShardOptimizer): its context length and
// memory savings are then chosen for a rank's share of the moments.
func (s Spec) OptimizerShardedOver(n int) Spec {
	s.zero1Ranks = n
	return s
}

// Resolve returns s with every unset setting at its default, or an error
// naming each setting that cannot be used, what is wrong with it and how to
// fix it. It leaves the paths (ModelDir, TrainData, ...) to the caller. Run
// and Validate resolve their spec themselves; the run service resolves at
// creation, so a stored run keeps the values it was created with.
func (s Spec) Resolve() (Spec, error) {
	if s.Task == "" {
		s.Task = "chat"
	}
	if s.Duration == (Duration{}) {
		s.Duration, _ = ParseDuration(settings.Duration)
	}
	if s.Optimizer == "" {
		s.Optimizer = settings.Optimizer
	}
	if s.LearningRate == 0 {
		s.LearningRate = s.defaultLearningRate()
	}
	zeroIsDefault(&s.BatchRows, settings.BatchRows)
	zeroIsDefault(&s.GradAccum, settings.GradAccum)
	zeroIsDefault(&s.KeepCheckpoints, settings.KeepCheckpoints)
	if s.WarmupFrac == nil {
		f := settings.WarmupFrac
		s.WarmupFrac = &f
	}
	if s.Decay == "" {
		s.Decay = settings.Decay
	}
	if s.Precision == "" {
		s.Precision = settings.Precision
	}
	if s.AdamW == (optim.AdamWConfig{}) {
		s.AdamW = optim.DefaultAdamW
	}
	if s.Method == "" {
		s.Method = settings.Method
	}
	return s, errors.Join(s.resolveLoRA(), s.resolveLionW(), settings.CheckLearningRate(s.LearningRate),
		settings.CheckCount("context_length", s.ContextLength, 0), settings.CheckCount("batch_rows", s.BatchRows, 1),
		settings.CheckCount("grad_accum", s.GradAccum, 1), settings.CheckCount("checkpoint_every", s.CheckpointEvery, 0),
		settings.CheckCount("keep_checkpoints", s.KeepCheckpoints, 1), settings.CheckPrecision(s.Precision),
		settings.CheckWarmupFrac(*s.WarmupFrac), settings.CheckDecay(s.Decay), settings.CheckFinalLRMult(s.FinalLRMult, s.Decay),
		s.AdamW.Validate())
}

// withDefaults is Resolve, after checking the required paths are set.
func (s Spec) withDefaults() (Spec, error) {
	if s.ModelDir == "" {
		return s, &settings.Error{Setting: "model", Problem: "not set", Fix: "name a base model"}
	}
	if s.TrainData == "" {
		return s, &settings.Error{Setting: "train_data_path", Problem: "not set", Fix: "name a JSONL file or a folder of .txt files"}
	}
	return s.Resolve()
}

func zeroIsDefault(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}

// schedule is the learning-rate schedule of a resolved spec over totalSteps.
func (s Spec) schedule(totalSteps int) optim.Schedule {
	return optim.Schedule{Peak: s.LearningRate, TotalSteps: totalSteps, Decay: s.Decay, FinalMult: s.FinalLRMult,
		WarmupSteps: int(math.Ceil(*s.WarmupFrac * float64(totalSteps)))}
}

// defaultLearningRate is the peak learning rate of a run that sets none:
// AdamW's, or LionW's (lower, as its sign update is larger).
func (s Spec) defaultLearningRate() float64 {
	switch {
	case s.Optimizer != "lionw":
		return settings.LearningRate
	case s.Method == "lora":
		return settings.LionWLoRALearningRate
	default:
		return settings.LionWLearningRate
	}
}

// resolveLionW checks the optimizer name and fills LionW's defaults; a
// LionW setting on an AdamW run is refused rather than ignored.
func (s *Spec) resolveLionW() error {
	if err := settings.CheckOptimizer(s.Optimizer); err != nil {
		return err
	}
	if s.Optimizer != "lionw" {
		if s.LionW != nil {
			return &settings.Error{Setting: "optimizer", Problem: "LionW settings are given but the optimizer is " + s.Optimizer,
				Fix: `set optimizer.name to "lionw", or remove them`}
		}
		return nil
	}
	if s.LionW == nil || *s.LionW == (optim.LionWConfig{}) {
		c := optim.DefaultLionW
		s.LionW = &c
	}
	return s.LionW.Validate()
}

// NewRanges makes the spec's optimizer of ranges of the arena: a
// data-parallel rank's shard of the state, or the whole state that the
// leader of such a run resumes and saves. The spec is resolved; `hone
// bench train` makes its optimizer here too.
func (s Spec) NewRanges() optim.NewRanges {
	if s.Optimizer == "lionw" {
		return optim.LionWRanges(*s.LionW, s.LearningRate)
	}
	return optim.AdamWRanges(s.AdamW)
}

// NewOptimizer makes the resolved spec's optimizer for m, or for the
// adapter a of a LoRA run.
func (s Spec) NewOptimizer(m *engine.Model, a *engine.Adapter) (optim.Optimizer, error) {
	if s.Optimizer == "lionw" {
		if a != nil {
			return optim.NewLionWAdapter(a, *s.LionW, s.LearningRate)
		}
		return optim.NewLionW(m, *s.LionW, s.LearningRate)
	}
	if a != nil {
		return optim.NewAdamWAdapter(a, s.AdamW)
	}
	return optim.NewAdamW(m, s.AdamW)
}

// OptimizerStates is the fp32 buffers the spec's optimizer keeps per
// trained parameter (engine.Options.OptimizerStates): LionW's one moment,
// or 0 for AdamW's default two.
func (s Spec) OptimizerStates() int {
	if s.Optimizer == "lionw" {
		return 1
	}
	return 0
}
