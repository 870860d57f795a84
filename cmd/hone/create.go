package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"hone/client"
	"hone/settings"
)

func createCmd() *cobra.Command {
	var cf clientFlags
	var req client.CreateRunRequest
	var wait, noValidate bool
	var trainVersion int64
	var applySettings func()
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a fine-tuning run; prints its name as the last line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			applySettings()
			if cmd.Flags().Changed("train-data-version") {
				req.TrainDataVersion = &trainVersion
			}
			completeRequest(&req, noValidate)
			ctx := cmd.Context()
			run, err := c.CreateRun(ctx, req)
			if err != nil {
				return err
			}
			if !wait {
				fmt.Fprintln(cmd.OutOrStdout(), run.Name)
				return nil
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "run %s %s\n", run.Name, run.Status)
			final, err := follow(cmd, c, run.Name)
			fmt.Fprintln(cmd.OutOrStdout(), run.Name)
			if err != nil {
				return err
			}
			if final.Status != client.StatusCompleted {
				msg := final.Error
				if msg == "" && len(final.Events) > 0 {
					msg = final.Events[len(final.Events)-1].Message
				}
				return fmt.Errorf("run %s %s: %s", run.Name, final.Status, msg)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "run %s COMPLETED: registered as %s\n", run.Name, final.RegisteredModel)
			return nil
		},
	}
	cf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&req.Model, "model", "", "base model: HF directory, HF id in the local HF cache, or catalog version (main.demo.bot/3, main.demo.bot@champion)")
	fl.StringVar(&req.TrainDataPath, "train-data-path", "", "JSONL file (chat, instruct), folder of .txt files (continued pre-training), "+
		"Parquet file or folder, Hugging Face dataset folder or cached id, Delta table, or /Volumes/... path")
	fl.StringVar(&req.TrainDataSplit, "train-data-split", "", "Hugging Face dataset split of the train data (default train)")
	fl.StringVar(&req.EvalDataSplit, "eval-data-split", "", "Hugging Face dataset split of the eval data (default validation, else test)")
	fl.Int64Var(&trainVersion, "train-data-version", 0, "Delta table version of the train data (default the latest)")
	fl.StringVar(&req.RegisterTo, "register-to", "", "catalog.schema or catalog.schema.model")
	fl.StringVar(&req.TaskType, "task-type", client.TaskChatCompletion, "CHAT_COMPLETION, INSTRUCTION_FINETUNE or CONTINUED_PRETRAIN")
	fl.StringVar(&req.EvalDataPath, "eval-data-path", "", "held-out data of the same format")
	fl.StringArrayVar(&req.EvalPrompts, "eval-prompt", nil, "prompt completed at every checkpoint (repeatable)")
	fl.StringVar(&req.CustomWeightsPath, "custom-weights-path", "", "start from this checkpoint's weights")
	fl.StringVar(&req.ExperimentPath, "experiment-path", "", "tracking experiment (default /Users/<user>/hone)")
	fl.Uint64Var(&req.Seed, "seed", 0, settings.Help("seed"))
	applySettings = settingFlags(cmd, &req)
	fl.StringVar(&req.User, "user", "", "user the run belongs to (default $USER)")
	fl.BoolVar(&noValidate, "no-validate", false, "skip input validation (validate_inputs=false)")
	fl.BoolVar(&wait, "wait", false, "follow the run; exit 0 only if it COMPLETED")
	return cmd
}

// settingFlags registers the run-settings flags of cmd, with defaults and
// help from package settings, and returns the function that copies the
// given ones into req. A flag left out sends nothing, so the server's
// defaults apply; a flag given as 0 sends 0 (no decay, no clipping).
func settingFlags(cmd *cobra.Command, req *client.CreateRunRequest) func() {
	fl := cmd.Flags()
	opt := &client.Optimizer{}
	var apply []func()
	str := func(dst *string, flag, setting, def string) {
		v := fl.String(flag, def, settings.Help(setting))
		apply = append(apply, func() { setIfChanged(fl.Changed(flag), dst, *v) })
	}
	integer := func(dst *int, flag, setting string, def int) {
		v := fl.Int(flag, def, settings.Help(setting))
		apply = append(apply, func() { setIfChanged(fl.Changed(flag), dst, *v) })
	}
	float := func(dst *float64, flag, setting string, def float64) {
		v := fl.Float64(flag, def, settings.Help(setting))
		apply = append(apply, func() { setIfChanged(fl.Changed(flag), dst, *v) })
	}
	optional := func(dst **float64, flag, setting string, def float64) {
		v := fl.Float64(flag, def, settings.Help(setting))
		apply = append(apply, func() { setIfChanged(fl.Changed(flag), dst, v) })
	}
	str(&req.TrainingDuration, "training-duration", "training_duration", settings.Duration)
	float(&req.LearningRate, "learning-rate", "learning_rate", settings.LearningRate)
	integer(&req.ContextLength, "context-length", "context_length", 0)
	integer(&req.BatchRows, "batch-rows", "batch_rows", settings.BatchRows)
	integer(&req.GradAccum, "grad-accum", "grad_accum", settings.GradAccum)
	integer(&req.CheckpointEvery, "checkpoint-every", "checkpoint_every", settings.CheckpointEvery)
	integer(&req.KeepCheckpoints, "keep-checkpoints", "keep_checkpoints", settings.KeepCheckpoints)
	integer(&req.Nodes, "nodes", "nodes", settings.Nodes)
	str(&req.Sharding, "sharding", "sharding", settings.Sharding)
	str(&req.Precision, "precision", "precision", settings.Precision)
	str(&req.Method, "method", "method", settings.Method)
	apply = append(apply, loraFlags(cmd, req))
	str(&opt.Name, "optimizer", "optimizer.name", settings.Optimizer)
	optional(&opt.WarmupFrac, "warmup-frac", "optimizer.warmup_frac", settings.WarmupFrac)
	str(&opt.Decay, "lr-decay", "optimizer.decay", settings.Decay)
	float(&opt.FinalLRMult, "final-lr-mult", "optimizer.final_lr_mult", settings.FinalLRMult)
	optional(&opt.Beta1, "beta1", "optimizer.beta1", settings.Beta1)
	optional(&opt.Beta2, "beta2", "optimizer.beta2", settings.Beta2)
	float(&opt.Eps, "eps", "optimizer.eps", settings.Eps)
	optional(&opt.WeightDecay, "weight-decay", "optimizer.weight_decay", settings.WeightDecay)
	optional(&opt.MaxGradNorm, "max-grad-norm", "optimizer.max_grad_norm", settings.MaxGradNorm)
	return func() {
		for _, f := range apply {
			f()
		}
		if *opt != (client.Optimizer{}) {
			req.Optimizer = opt
		}
	}
}

// setIfChanged stores v in dst when its flag was given.
func setIfChanged[T any](changed bool, dst *T, v T) {
	if changed {
		*dst = v
	}
}

func absIfLocal(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	if _, err := os.Stat(p); err != nil {
		return p // not here: let the server resolve it in its data roots
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// follow shows live progress on stderr until the run ends.
func follow(cmd *cobra.Command, c *client.Client, name string) (*client.Run, error) {
	var bar *progressbar.ProgressBar
	var lastEvent int64
	last := ""
	final, err := c.WaitRun(cmd.Context(), name, time.Second, func(r *client.Run) {
		for _, e := range r.Events {
			if e.ID > lastEvent && e.Type != "CHECKPOINT" && e.Type != "EVAL" && e.Type != "LOG" || e.ID > lastEvent && bar == nil {
				if bar != nil {
					fmt.Fprintln(cmd.ErrOrStderr())
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%-9s %s\n", e.Type, e.Message)
			}
			lastEvent = max(lastEvent, e.ID)
		}
		m := r.Metrics
		if m == nil || m.TotalSteps == 0 {
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions64(int64(m.TotalSteps), progressbar.OptionSetWriter(cmd.ErrOrStderr()),
				progressbar.OptionShowCount(), progressbar.OptionThrottle(200*time.Millisecond))
		}
		desc := fmt.Sprintf("step %d/%d %s", m.Step, m.TotalSteps, metricLine(m))
		desc += etaText(r, time.Now())
		if desc != last {
			bar.Describe(desc)
			bar.Set(m.Step) //nolint:errcheck // display only
			last = desc
		}
	})
	if bar != nil {
		endBar(cmd.ErrOrStderr(), bar, final)
	}
	if err != nil {
		return nil, err
	}
	if final == nil {
		return nil, errors.New("run vanished")
	}
	return final, nil
}

// endBar leaves the bar at the step the run reached: full only for a
// COMPLETED run, so a run that failed or was cancelled never shows 100%.
func endBar(w io.Writer, bar *progressbar.ProgressBar, final *client.Run) {
	if final != nil && final.Status == client.StatusCompleted {
		bar.Finish() //nolint:errcheck // display only
		fmt.Fprintln(w)
		return
	}
	bar.Exit() //nolint:errcheck // display only
	fmt.Fprintln(w)
	if final != nil && final.Metrics != nil && final.Metrics.TotalSteps > 0 {
		m := final.Metrics
		fmt.Fprintf(w, "%s at step %d/%d (%.0f%%)\n", final.Status, m.Step, m.TotalSteps, 100*float64(m.Step)/float64(m.TotalSteps))
	}
}

// loraFlags registers the LoRA flags of cmd and returns the function that
// copies the given ones into req (req.LoRA stays nil when none is given).
func loraFlags(cmd *cobra.Command, req *client.CreateRunRequest) func() {
	fl := cmd.Flags()
	l := &client.LoRA{}
	rank := fl.Int("lora-rank", settings.LoRARank, settings.Help("lora.rank"))
	alpha := fl.Float64("lora-alpha", settings.LoRAAlpha, settings.Help("lora.alpha"))
	dropout := fl.Float64("lora-dropout", settings.LoRADropout, settings.Help("lora.dropout"))
	targets := fl.StringSlice("lora-targets", settings.LoRATargets(), settings.Help("lora.target_modules"))
	fl.BoolVar(&l.UseRSLoRA, "lora-rslora", false, settings.Help("lora.use_rslora"))
	fl.StringVar(&l.QuantizeBase, "quantize-base", "", settings.Help("lora.quantize_base"))
	fl.BoolVar(&l.QuantizeEmbeddings, "quantize-embeddings", false, settings.Help("lora.quantize_embeddings"))
	fl.StringVar(&req.AdapterPath, "adapter", "", settings.Help("adapter_path"))
	fl.BoolVar(&req.RegisterAdapter, "register-adapter", false, settings.Help("register_adapter"))
	return func() {
		setIfChanged(fl.Changed("lora-rank"), &l.Rank, *rank)
		setIfChanged(fl.Changed("lora-alpha"), &l.Alpha, *alpha)
		setIfChanged(fl.Changed("lora-dropout"), &l.Dropout, dropout)
		setIfChanged(fl.Changed("lora-targets"), &l.TargetModules, *targets)
		if l.Rank != 0 || l.Alpha != 0 || l.Dropout != nil || l.TargetModules != nil || l.UseRSLoRA || l.QuantizeBase != "" || l.QuantizeEmbeddings {
			req.LoRA = l
		}
	}
}

// completeRequest fills in what a create request from the CLI leaves to
// the caller's environment: --no-validate, local relative paths made
// absolute (they mean the caller's directory), and the user.
func completeRequest(req *client.CreateRunRequest, noValidate bool) {
	if noValidate {
		f := false
		req.ValidateInputs = &f
	}
	for _, p := range []*string{&req.TrainDataPath, &req.EvalDataPath, &req.CustomWeightsPath, &req.AdapterPath} {
		*p = absIfLocal(*p)
	}
	if strings.HasPrefix(req.Model, ".") {
		req.Model = absIfLocal(req.Model)
	}
	if req.User == "" {
		req.User = os.Getenv("USER")
	}
}
