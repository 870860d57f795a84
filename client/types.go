package client

import "time"

// Task types.
const (
	TaskChatCompletion      = "CHAT_COMPLETION"
	TaskInstructionFinetune = "INSTRUCTION_FINETUNE"
	TaskContinuedPretrain   = "CONTINUED_PRETRAIN"
)

// Run states.
const (
	StatusPending   = "PENDING"
	StatusQueued    = "QUEUED"
	StatusStarting  = "STARTING"
	StatusRunning   = "RUNNING"
	StatusCompleted = "COMPLETED"
	StatusFailed    = "FAILED"
	StatusStopping  = "STOPPING"
	StatusStopped   = "STOPPED"
)

// Terminal reports whether a run in status will not change again.
func Terminal(status string) bool {
	return status == StatusCompleted || status == StatusFailed || status == StatusStopped
}

// CreateRunRequest is the hosted product's run parameters plus hone's own.
type CreateRunRequest struct {
	Model            string  `json:"model"`
	TrainDataPath    string  `json:"train_data_path"`
	RegisterTo       string  `json:"register_to"`
	TaskType         string  `json:"task_type,omitempty"`         // default CHAT_COMPLETION
	TrainingDuration string  `json:"training_duration,omitempty"` // "3ep", "500ba", "2_000_000tok"; default 1ep
	LearningRate     float64 `json:"learning_rate,omitempty"`
	ContextLength    int     `json:"context_length,omitempty"`
	EvalDataPath     string  `json:"eval_data_path,omitempty"`
	// Tables only: the Hugging Face dataset split of train_data_path
	// (default train) and of eval_data_path (default validation, else
	// test), and the Delta table version of train_data_path (default the
	// latest).
	TrainDataSplit    string   `json:"train_data_split,omitempty"`
	EvalDataSplit     string   `json:"eval_data_split,omitempty"`
	TrainDataVersion  *int64   `json:"train_data_version,omitempty"`
	EvalPrompts       []string `json:"eval_prompts,omitempty"`
	CustomWeightsPath string   `json:"custom_weights_path,omitempty"`
	ExperimentPath    string   `json:"experiment_path,omitempty"` // default /Users/<user>/hone
	ValidateInputs    *bool    `json:"validate_inputs,omitempty"` // default true
	User              string   `json:"user,omitempty"`

	Seed            uint64     `json:"seed,omitempty"`
	BatchRows       int        `json:"batch_rows,omitempty"`
	GradAccum       int        `json:"grad_accum,omitempty"`
	CheckpointEvery int        `json:"checkpoint_every,omitempty"`
	KeepCheckpoints int        `json:"keep_checkpoints,omitempty"`
	Optimizer       *Optimizer `json:"optimizer,omitempty"`
	// Precision is "fp32" (default) or "bf16": bf16 matrix products with
	// fp32 master weights, optimizer state and loss.
	Precision string `json:"precision,omitempty"`
	// Method is "full" (default: every weight trains) or "lora" (a
	// low-rank adapter trains on the frozen base; LoRA holds its settings).
	Method string `json:"method,omitempty"`
	LoRA   *LoRA  `json:"lora,omitempty"`
	// AdapterPath (method lora) is a PEFT adapter directory to continue
	// training; its adapter_config.json sets the rank, alpha and targets.
	AdapterPath string `json:"adapter_path,omitempty"`
	// RegisterAdapter (method lora) registers the adapter alone, as a
	// version that names its base model, instead of the merged model.
	RegisterAdapter bool `json:"register_adapter,omitempty"`
	// Nodes is how many workers train the run together, one rank each
	// (data parallel over Gloo); default 1.
	Nodes int `json:"nodes,omitempty"`
	// Sharding (nodes > 1) is what each rank holds 1/N of: "none"
	// (default: every rank holds the whole state), "optimizer" (the
	// optimizer state, AdamW's or LionW's moments, ZeRO stage 1) or
	// "parameters" (the fp32 parameters, gradients and moments, ZeRO
	// stage 3). The results are those of an
	// unsharded run; the memory per rank is smaller.
	Sharding string `json:"sharding,omitempty"`
}

// LoRA holds the adapter settings of a method "lora" run; unset fields take
// the server's defaults (rank 16, alpha 32, dropout 0.05, all projections).
type LoRA struct {
	Rank          int      `json:"rank,omitempty"`
	Alpha         float64  `json:"alpha,omitempty"`
	Dropout       *float64 `json:"dropout,omitempty"` // 0: none; unset: the default
	TargetModules []string `json:"target_modules,omitempty"`
	UseRSLoRA     bool     `json:"use_rslora,omitempty"` // scale by alpha/sqrt(r)
	// QuantizeBase "nf4" holds the frozen base in 4-bit NormalFloat while
	// training (QLoRA); the result merges into the unquantized base.
	QuantizeBase string `json:"quantize_base,omitempty"`
	// QuantizeEmbeddings (with QuantizeBase "nf4") holds the token
	// embeddings and output head in NF4 too.
	QuantizeEmbeddings bool `json:"quantize_embeddings,omitempty"`
}

// Optimizer holds AdamW and schedule settings; unset fields take the
// server's defaults. Settings for which 0 is a choice (no weight decay, no
// clipping, no warmup) are pointers: nil means the default, a pointer to 0
// means 0.
type Optimizer struct {
	// Name is "adamw" (the default) or "lionw" (the hosted product's
	// DecoupledLionW: one moment, no eps, default learning rate 5e-7 for
	// full fine-tuning, weight decay scaled by the schedule only).
	Name        string   `json:"name,omitempty"`
	Beta1       *float64 `json:"beta1,omitempty"`
	Beta2       *float64 `json:"beta2,omitempty"`
	Eps         float64  `json:"eps,omitempty"`
	WeightDecay *float64 `json:"weight_decay,omitempty"`  // 0: no decay
	MaxGradNorm *float64 `json:"max_grad_norm,omitempty"` // 0: no clipping
	WarmupFrac  *float64 `json:"warmup_frac,omitempty"`   // 0: no warmup
	Decay       string   `json:"decay,omitempty"`         // linear, cosine or constant
	FinalLRMult float64  `json:"final_lr_mult,omitempty"`
}

// Float returns a pointer to v, for Optimizer's optional fields.
func Float(v float64) *float64 { return &v }

// Run is a run as the API reports it. Get fills Events, Checkpoints and
// Metrics; List leaves them empty.
type Run struct {
	Name            string           `json:"name"`
	User            string           `json:"user"`
	ExperimentPath  string           `json:"experiment_path"`
	Status          string           `json:"status"`
	Config          CreateRunRequest `json:"config"`
	BaseModel       string           `json:"base_model,omitempty"`
	ModelDir        string           `json:"model_dir,omitempty"`
	RegisterTo      string           `json:"register_to"`
	RegisteredModel string           `json:"registered_model,omitempty"` // "catalog.schema.model/N"
	Error           string           `json:"error,omitempty"`
	CreatedAt       time.Time        `json:"created_at"`
	StartedAt       *time.Time       `json:"started_at,omitempty"`
	EstimatedEndAt  *time.Time       `json:"estimated_end_at,omitempty"`
	CompletedAt     *time.Time       `json:"completed_at,omitempty"`
	Validation      string           `json:"validation,omitempty"` // the data report summary
	Events          []Event          `json:"events,omitempty"`
	Checkpoints     []Checkpoint     `json:"checkpoints,omitempty"`
	Metrics         *LatestMetrics   `json:"metrics,omitempty"`
	// Ranks are the workers of each attempt of a multi-node run.
	Ranks []RunRank `json:"ranks,omitempty"`
}

// RunRank is one worker's part in an attempt (a claim) of a multi-node
// run: when it joined, when and why it left.
type RunRank struct {
	Attempt  int64      `json:"attempt"`
	Rank     int        `json:"rank"`
	Worker   string     `json:"worker"`
	Host     string     `json:"host"`
	JoinedAt time.Time  `json:"joined_at"`
	LeftAt   *time.Time `json:"left_at,omitempty"`
	Note     string     `json:"note,omitempty"`
}

// Remaining is how long the run is expected to take from now on: never
// negative (an estimate already past means any moment now), and false
// when there is no estimate or the run has ended.
func (r *Run) Remaining(now time.Time) (time.Duration, bool) {
	if r.EstimatedEndAt == nil || Terminal(r.Status) {
		return 0, false
	}
	return max(0, r.EstimatedEndAt.Sub(now)), true
}

// Event is one entry of a run's history.
type Event struct {
	ID      int64     `json:"id"`
	Type    string    `json:"type"`
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
}

// Checkpoint is a saved training state of a run.
type Checkpoint struct {
	Step  int       `json:"step"`
	Epoch float64   `json:"epoch"`
	Path  string    `json:"path"`
	Time  time.Time `json:"time"`
}

// LatestMetrics are a run's most recent values. Pointers are nil when
// nothing was measured (or the value was NaN).
type LatestMetrics struct {
	Step          int      `json:"step"`
	TotalSteps    int      `json:"total_steps"`
	Epoch         float64  `json:"epoch"`
	Loss          *float64 `json:"loss,omitempty"`
	LR            float64  `json:"lr"`
	GradNorm      *float64 `json:"grad_norm,omitempty"`
	TokensPerSec  float64  `json:"tokens_per_s"`
	TokensSeen    int64    `json:"tokens_seen"`
	ElapsedS      float64  `json:"elapsed_s"`
	EvalLoss      *float64 `json:"eval_loss,omitempty"`
	Perplexity    *float64 `json:"perplexity,omitempty"`
	TokenAccuracy *float64 `json:"token_accuracy,omitempty"`
}

// StepMetric is one optimizer step's measurements.
type StepMetric struct {
	Step         int       `json:"step"`
	TotalSteps   int       `json:"total_steps"`
	Epoch        float64   `json:"epoch"`
	Loss         *float64  `json:"loss"`
	LR           float64   `json:"lr"`
	GradNorm     *float64  `json:"grad_norm"`
	TokensPerSec float64   `json:"tokens_per_s"`
	TokensSeen   int64     `json:"tokens_seen"`
	ElapsedS     float64   `json:"elapsed_s"`
	Time         time.Time `json:"time"`
}

// EvalMetric is one evaluation.
type EvalMetric struct {
	Step          int       `json:"step"`
	Loss          *float64  `json:"loss"`
	Perplexity    *float64  `json:"perplexity"`
	TokenAccuracy *float64  `json:"token_accuracy"`
	Time          time.Time `json:"time"`
}

// Metrics are a run's series, or one page of them: the page's steps with
// the evaluations of the same steps.
type Metrics struct {
	Steps         []StepMetric `json:"steps"`
	Evals         []EvalMetric `json:"evals"`
	NextPageToken string       `json:"next_page_token,omitempty"`
}

// PromptOutput is an eval prompt's completion at a checkpoint.
type PromptOutput struct {
	Step   int       `json:"step"`
	Index  int       `json:"index"`
	Prompt string    `json:"prompt"`
	Output string    `json:"output"`
	Time   time.Time `json:"time"`
}

// PageOptions asks for one page of a listing.
type PageOptions struct {
	Limit     int    // rows per page: default 100, at most 1000
	PageToken string // the previous page's NextPageToken; "" for the first page
}

// ListEventsOptions pages a run's events, only those with ID > After.
type ListEventsOptions struct {
	After int64
	PageOptions
}

// EventList is one page of a run's events, oldest first.
type EventList struct {
	Events        []Event `json:"events"`
	NextPageToken string  `json:"next_page_token,omitempty"`
}

// CheckpointList is one page of a run's checkpoints, in step order.
type CheckpointList struct {
	Checkpoints   []Checkpoint `json:"checkpoints"`
	NextPageToken string       `json:"next_page_token,omitempty"`
}

// PromptOutputList is one page of a run's eval-prompt completions, by
// step and then prompt.
type PromptOutputList struct {
	PromptOutputs []PromptOutput `json:"prompt_outputs"`
	NextPageToken string         `json:"next_page_token,omitempty"`
}

// ExperimentList is one page of experiments, by path.
type ExperimentList struct {
	Experiments   []Experiment `json:"experiments"`
	NextPageToken string       `json:"next_page_token,omitempty"`
}

// SupportedModelList is the supported base models table.
type SupportedModelList struct {
	Models []SupportedModel `json:"models"`
}

// Health is the answer of GET /api/health (and of GET /api/livez, which
// only says the process serves).
type Health struct {
	Status string `json:"status"`          // "ok", or "unavailable" (HTTP 503)
	Store  string `json:"store,omitempty"` // "ok" or "unavailable": whether the database answers
	Reason string `json:"reason,omitempty"`
}

// ListRunsOptions filters and pages a listing; zero fields do not filter.
type ListRunsOptions struct {
	User           string
	ExperimentPath string
	Status         []string
	CreatedAfter   time.Time
	CreatedBefore  time.Time
	Limit          int
	PageToken      string
}

// RunList is one page of runs.
type RunList struct {
	Runs          []Run  `json:"runs"`
	NextPageToken string `json:"next_page_token,omitempty"`
}

// CancelRequest names runs to cancel: Names, or every active run of
// ExperimentPath.
type CancelRequest struct {
	Names          []string `json:"names,omitempty"`
	ExperimentPath string   `json:"experiment_path,omitempty"`
}

// CancelResult lists the runs a cancel acted on, with their new status.
type CancelResult struct {
	Runs []Run `json:"runs"`
}

// Experiment groups runs.
type Experiment struct {
	Path      string    `json:"path"`
	User      string    `json:"user"`
	CreatedAt time.Time `json:"created_at"`
	Runs      int       `json:"runs"`
}

// SupportedModel is one row of the supported base models table.
type SupportedModel struct {
	Name       string `json:"name"`
	MaxContext int    `json:"max_context"`
	License    string `json:"license"`
	Retiring   bool   `json:"retiring,omitempty"`
	Trainable  bool   `json:"trainable"`
	Notes      string `json:"notes,omitempty"`
}

// CreateCatalogRequest creates "catalog" or "catalog.schema".
type CreateCatalogRequest struct {
	Name    string `json:"name"`
	Comment string `json:"comment,omitempty"`
}

// Catalog is a created catalog ("main") or schema ("main.demo").
type Catalog struct {
	Name    string `json:"name"`
	Comment string `json:"comment,omitempty"`
}

// Model is a registered model and its versions.
type Model struct {
	Name     string         `json:"name"`
	Versions []ModelVersion `json:"versions"`
}

// ModelVersion is one registered model directory with its lineage.
type ModelVersion struct {
	Version         int    `json:"version"`
	StorageLocation string `json:"storage_location"`
	Run             string `json:"run,omitempty"`
	BaseModel       string `json:"base_model,omitempty"`
	// Adapter marks a LoRA adapter (PEFT layout) registered alone: it
	// serves merged into BaseModel, the base version it names.
	Adapter         bool           `json:"adapter,omitempty"`
	DataFingerprint string         `json:"data_fingerprint,omitempty"`
	Metrics         map[string]any `json:"metrics,omitempty"`
	License         string         `json:"license,omitempty"`
	CreatedAt       time.Time      `json:"created_at"`
	Aliases         []string       `json:"aliases"`
}

// AliasRequest points an alias at a version.
type AliasRequest struct {
	Version int `json:"version"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }

// Finish reasons of a completion.
const (
	FinishStop   = "stop"   // an end-of-generation token or a stop string
	FinishLength = "length" // max_tokens or the context window ran out
)

// GenerateRequest asks a registered model version for one completion.
// Model is "catalog.schema.model/N", "catalog.schema.model@alias",
// "catalog.schema.model" (the newest version) or an endpoint's name. Exactly one of Messages
// (formatted with the model's chat template, as its chat training data
// was) and Prompt (raw text; the only choice for a model without a chat
// template) is set.
type GenerateRequest struct {
	Model    string        `json:"model"`
	Messages []ChatMessage `json:"messages,omitempty"`
	Prompt   string        `json:"prompt,omitempty"`
	// MaxTokens bounds the completion; 0 takes the server's default.
	MaxTokens int `json:"max_tokens,omitempty"`
	// Temperature defaults to 1 (0 decodes greedily), TopP to 1 (no
	// limit); TopK 0 means no limit.
	Temperature *float64 `json:"temperature,omitempty"`
	TopP        *float64 `json:"top_p,omitempty"`
	TopK        int      `json:"top_k,omitempty"`
	// Seed makes sampling repeatable; unset, the server draws one.
	Seed *uint64 `json:"seed,omitempty"`
	// Stop ends the completion before the first of these strings (at most 4).
	Stop []string `json:"stop,omitempty"`
}

// ChatMessage is one turn of a conversation.
type ChatMessage struct {
	Role    string `json:"role"` // system, user or assistant
	Content string `json:"content"`
}

// GenerateResponse is a finished completion.
type GenerateResponse struct {
	Model        string `json:"model"` // the version that answered, "catalog.schema.model/N"
	Text         string `json:"text"`
	FinishReason string `json:"finish_reason"` // FinishStop or FinishLength
	Usage        Usage  `json:"usage"`
	// PromptTokenIDs are the ids the model completed (BOS included as the
	// model adds it); TokenIDs the sampled ids, an end token included.
	PromptTokenIDs []int `json:"prompt_token_ids"`
	TokenIDs       []int `json:"token_ids"`
}

// Usage counts the tokens of a completion.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"` // every sampled token, an end token included
	TotalTokens      int `json:"total_tokens"`
}
