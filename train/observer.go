package train

import "time"

// StepMetrics are logged after every optimizer step.
type StepMetrics struct {
	Step         int // 1-based: optimizer steps done
	TotalSteps   int
	Epoch        float64 // fractional epochs done
	Loss         float64 // mean over the step's scored tokens
	LR           float64
	GradNorm     float64 // before clipping
	TokensPerSec float64 // input tokens per second over this step
	TokensSeen   int64   // input tokens (not padding) consumed so far
	Elapsed      time.Duration
	ETA          time.Duration
}

// EvalMetrics are computed on the eval data at each checkpoint.
type EvalMetrics struct {
	Step          int
	Loss          float64
	Perplexity    float64
	TokenAccuracy float64
}

// Checkpoint is a saved training state.
type Checkpoint struct {
	Step  int
	Epoch float64
	Dir   string // holds model/ (HF layout, f32) and optimizer state
	// Pruned are the steps of older checkpoints this save removed to keep
	// Spec.KeepCheckpoints, so observers can forget them.
	Pruned []int
}

// PromptOutput is one eval prompt's completion.
type PromptOutput struct {
	Prompt string `json:"prompt"`
	Output string `json:"output"`
}

// Observer receives a run's progress. Calls come from the training
// goroutine, in order; implementations should return quickly.
type Observer interface {
	OnStep(StepMetrics)
	OnEval(EvalMetrics)
	OnCheckpoint(Checkpoint)
	OnPromptOutputs(step int, outs []PromptOutput)
	OnLog(msg string)
}

// Fencer is an optional extra of an Observer: Fence is called just before
// the trainer commits a checkpoint or the final model (renames it into
// place, prunes older checkpoints) and refuses with an error when this
// process may no longer write the run (it lost its lease); the commit is
// then abandoned and Run returns the error.
type Fencer interface {
	Fence(what string) error
}

// fence calls obs's Fence if it has one.
func fence(obs Observer, what string) error {
	if f, ok := obs.(Fencer); ok {
		return f.Fence(what)
	}
	return nil
}

// Result describes a finished run.
type Result struct {
	ModelDir        string // final model, HF layout (bf16; a LoRA run's merged model in the base's dtype; "" with AdapterOnly)
	AdapterDir      string // a LoRA run's final adapter, PEFT layout; "" for a full run
	Steps           int
	TokensSeen      int64
	TrainLoss       float64 // mean loss of the last step
	EvalLoss        float64 // last eval loss; 0 without eval data
	DataFingerprint string
}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) OnStep(StepMetrics)                  {}
func (NopObserver) OnEval(EvalMetrics)                  {}
func (NopObserver) OnCheckpoint(Checkpoint)             {}
func (NopObserver) OnPromptOutputs(int, []PromptOutput) {}
func (NopObserver) OnLog(string)                        {}
