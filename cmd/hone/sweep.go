package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"hone/client"
	"hone/settings"
)

func sweepCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "sweep", Short: "Create, list, inspect and cancel sweeps: one run per learning rate and training duration"}
	cf.register(cmd)
	cmd.AddCommand(sweepCreateCmd(&cf), sweepListCmd(&cf), sweepGetCmd(&cf), sweepCancelCmd(&cf))
	return cmd
}

func sweepCreateCmd(cf *clientFlags) *cobra.Command {
	var req client.CreateSweepRequest
	var noValidate bool
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a sweep: a run for every --learning-rate and --training-duration pair, in one experiment; prints its name",
		Args:  cobra.NoArgs,
		Example: "  hone sweep create --model meta-llama/Llama-3.2-1B-Instruct --train-data-path train.jsonl \\\n" +
			"    --register-to main.demo --learning-rate 1e-5,3e-5 --training-duration 1ep,3ep",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			completeRequest(&req.CreateRunRequest, noValidate)
			sw, err := c.CreateSweep(cmd.Context(), req)
			if err != nil {
				return err
			}
			printSweep(cmd.ErrOrStderr(), sw)
			fmt.Fprintln(cmd.OutOrStdout(), sw.Name)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.Model, "model", "", "base model: HF directory, HF id in the local HF cache, or catalog version")
	fl.StringVar(&req.TrainDataPath, "train-data-path", "", "training data, as for hone create")
	fl.StringVar(&req.RegisterTo, "register-to", "", "catalog.schema or catalog.schema.model (every run registers a version)")
	fl.StringVar(&req.TaskType, "task-type", client.TaskChatCompletion, "CHAT_COMPLETION, INSTRUCTION_FINETUNE or CONTINUED_PRETRAIN")
	fl.StringVar(&req.EvalDataPath, "eval-data-path", "", "held-out data; the best run is the one with the lowest final eval loss")
	fl.StringArrayVar(&req.EvalPrompts, "eval-prompt", nil, "prompt completed at every checkpoint (repeatable)")
	fl.StringVar(&req.CustomWeightsPath, "custom-weights-path", "", "start from this checkpoint's weights")
	fl.StringVar(&req.ExperimentPath, "experiment-path", "", "the sweep's experiment (default /Users/<user>/hone/<sweep name>)")
	fl.Uint64Var(&req.Seed, "seed", 0, settings.Help("seed"))
	fl.StringVar(&req.User, "user", "", "user the sweep belongs to (default $USER)")
	fl.BoolVar(&noValidate, "no-validate", false, "skip input validation (validate_inputs=false)")
	fl.Float64SliceVar(&req.LearningRate, "learning-rate", nil, "comma-separated peak learning rates, e.g. 1e-5,3e-5 (unset: the run default)")
	fl.StringSliceVar(&req.TrainingDuration, "training-duration", nil, "comma-separated durations, e.g. 1ep,3ep (unset: "+settings.Duration+")")
	// The run settings of hone create, but for the two the grid spans:
	// AddFlagSet skips the names registered above.
	var scratch cobra.Command
	apply := settingFlags(&scratch, &req.CreateRunRequest)
	fl.AddFlagSet(scratch.Flags())
	cmd.PreRun = func(*cobra.Command, []string) { apply() }
	return cmd
}

func sweepListCmd(cf *clientFlags) *cobra.Command {
	var asJSON bool
	var user string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List sweeps, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			l, err := c.ListSweeps(cmd.Context(), user)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), l)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATUS\tRUNS\tBEST\tEXPERIMENT\tCREATED")
			for _, s := range l.Sweeps {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", s.Name, s.Status, len(s.Runs), orDash(s.Best), s.ExperimentPath,
					s.CreatedAt.Local().Format("2006-01-02 15:04"))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&user, "user", "", "only this user's sweeps")
	return cmd
}

func sweepGetCmd(cf *clientFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a sweep's grid: each run's state and final losses, and the best run",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			sw, err := c.GetSweep(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), sw)
			}
			printSweep(cmd.OutOrStdout(), sw)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func sweepCancelCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel NAME",
		Short: "Cancel every run of a sweep that has not finished",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			sw, err := c.CancelSweep(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			printSweep(cmd.OutOrStdout(), sw)
			return nil
		},
	}
}

// printSweep writes a sweep's grid as a table, the best run marked.
func printSweep(w io.Writer, sw *client.Sweep) {
	fmt.Fprintf(w, "sweep %s %s: %d runs in %s\n", sw.Name, sw.Status, len(sw.Runs), sw.ExperimentPath)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tLEARNING RATE\tDURATION\tSTATUS\tEVAL LOSS\tTRAIN LOSS\t")
	for _, r := range sw.Runs {
		mark := ""
		if r.Name == sw.Best {
			mark = "best (" + strings.ReplaceAll(sw.BestBy, "_", " ") + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, strconv.FormatFloat(r.LearningRate, 'g', -1, 64), r.TrainingDuration,
			r.Status, loss(r.EvalLoss), loss(r.TrainLoss), mark)
	}
	tw.Flush() //nolint:errcheck // display only
}

func loss(v *float64) string {
	if v == nil {
		return "—"
	}
	return strconv.FormatFloat(*v, 'f', 4, 64)
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
