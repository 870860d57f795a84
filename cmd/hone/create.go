package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"hone/client"
)

func createCmd() *cobra.Command {
	var cf clientFlags
	var req client.CreateRunRequest
	var wait, noValidate bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a fine-tuning run; prints its name as the last line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			if noValidate {
				f := false
				req.ValidateInputs = &f
			}
			// Local relative paths mean the caller's directory.
			for _, p := range []*string{&req.TrainDataPath, &req.EvalDataPath, &req.CustomWeightsPath} {
				*p = absIfLocal(*p)
			}
			if strings.HasPrefix(req.Model, ".") {
				req.Model = absIfLocal(req.Model)
			}
			if req.User == "" {
				req.User = os.Getenv("USER")
			}
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
	fl.StringVar(&req.TrainDataPath, "train-data-path", "", "JSONL file (chat, instruct) or folder of .txt files (continued pre-training)")
	fl.StringVar(&req.RegisterTo, "register-to", "", "catalog.schema or catalog.schema.model")
	fl.StringVar(&req.TaskType, "task-type", client.TaskChatCompletion, "CHAT_COMPLETION, INSTRUCTION_FINETUNE or CONTINUED_PRETRAIN")
	fl.StringVar(&req.TrainingDuration, "training-duration", "1ep", `"3ep" epochs, "500ba" optimizer steps, "2_000_000tok" tokens`)
	fl.Float64Var(&req.LearningRate, "learning-rate", 0, "peak learning rate (default: the server's)")
	fl.IntVar(&req.ContextLength, "context-length", 0, "tokens per training row (default: the model's, capped)")
	fl.Uint64Var(&req.Seed, "seed", 0, "random seed")
	fl.IntVar(&req.CheckpointEvery, "checkpoint-every", 0, "optimizer steps between checkpoints (0: each epoch end)")
	fl.IntVar(&req.KeepCheckpoints, "keep-checkpoints", 0, "newest checkpoints kept (default 3)")
	fl.StringVar(&req.EvalDataPath, "eval-data-path", "", "held-out data of the same format")
	fl.StringArrayVar(&req.EvalPrompts, "eval-prompt", nil, "prompt completed at every checkpoint (repeatable)")
	fl.StringVar(&req.CustomWeightsPath, "custom-weights-path", "", "start from this checkpoint's weights")
	fl.StringVar(&req.ExperimentPath, "experiment-path", "", "tracking experiment (default /Users/<user>/hone)")
	fl.IntVar(&req.BatchRows, "batch-rows", 0, "rows per micro-batch")
	fl.IntVar(&req.GradAccum, "grad-accum", 0, "micro-batches per optimizer step")
	fl.StringVar(&req.Precision, "precision", "", "fp32 (default) or bf16 (bf16 matrix products, fp32 master weights)")
	opt := &client.Optimizer{}
	req.Optimizer = opt
	fl.Float64Var(&opt.WeightDecay, "weight-decay", 0, "AdamW weight decay (default 0.01; norms and biases never decay)")
	fl.Float64Var(&opt.Beta1, "beta1", 0, "AdamW beta1 (default 0.9)")
	fl.Float64Var(&opt.Beta2, "beta2", 0, "AdamW beta2 (default 0.999)")
	fl.Float64Var(&opt.MaxGradNorm, "max-grad-norm", 0, "global gradient-norm clip (default 1.0)")
	fl.Float64Var(&opt.WarmupFrac, "warmup-frac", 0, "fraction of steps of linear warmup (default 0.02)")
	fl.StringVar(&opt.Decay, "lr-decay", "", "learning-rate decay after warmup: linear (default) or cosine")
	fl.Float64Var(&opt.FinalLRMult, "final-lr-mult", 0, "learning-rate multiplier reached at the end (default 0)")
	fl.StringVar(&req.User, "user", "", "user the run belongs to (default $USER)")
	fl.BoolVar(&noValidate, "no-validate", false, "skip input validation (validate_inputs=false)")
	fl.BoolVar(&wait, "wait", false, "follow the run; exit 0 only if it COMPLETED")
	return cmd
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
		bar.Finish() //nolint:errcheck // display only
		fmt.Fprintln(cmd.ErrOrStderr())
	}
	if err != nil {
		return nil, err
	}
	if final == nil {
		return nil, errors.New("run vanished")
	}
	return final, nil
}
