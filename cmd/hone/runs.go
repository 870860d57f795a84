package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"hone/client"
)

// clientFlags reach the server: --server/HONE_SERVER, and the token from
// --token, --token-file or HONE_TOKEN.
type clientFlags struct {
	server string
	token  tokenFlags
}

func (f *clientFlags) register(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&f.server, "server", "", "hone server URL (default $HONE_SERVER or "+client.DefaultServer+"); trust a private HTTPS certificate with SSL_CERT_FILE")
	cmd.PersistentFlags().StringVar(&f.token.token, "token", "", "bearer token (default $HONE_TOKEN)")
	cmd.PersistentFlags().StringVar(&f.token.file, "token-file", "", "read the bearer token from this file")
}

func (f *clientFlags) client() (*client.Client, error) {
	server := f.server
	if server == "" {
		server = os.Getenv("HONE_SERVER")
	}
	token, err := f.token.resolve(func(msg string) { fmt.Fprintln(os.Stderr, "hone: warning:", msg) })
	if err != nil {
		return nil, err
	}
	return client.New(client.Config{Server: server, Token: token})
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{Use: "runs", Short: "List, inspect, cancel and delete runs"}
	cf.register(cmd)
	cmd.AddCommand(runsListCmd(&cf), runsGetCmd(&cf), runsEventsCmd(&cf), runsCancelCmd(&cf), runsResumeCmd(&cf), runsDeleteCmd(&cf))
	return cmd
}

func runsListCmd(cf *clientFlags) *cobra.Command {
	var asJSON, all bool
	var o client.ListRunsOptions
	var after, before string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List runs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			for _, p := range []struct {
				s string
				t *time.Time
			}{{after, &o.CreatedAfter}, {before, &o.CreatedBefore}} {
				if p.s != "" {
					if *p.t, err = time.Parse(time.RFC3339, p.s); err != nil {
						return fmt.Errorf("want an RFC 3339 time, e.g. 2026-03-01T12:00:00Z: %w", err)
					}
				}
			}
			out := []client.Run{}
			for {
				page, err := c.ListRuns(cmd.Context(), o)
				if err != nil {
					return err
				}
				out = append(out, page.Runs...)
				if page.NextPageToken != "" && !all {
					fmt.Fprintf(cmd.ErrOrStderr(), "more runs: --page-token %s (or --all)\n", page.NextPageToken)
				}
				if !all || page.NextPageToken == "" {
					break
				}
				o.PageToken = page.NextPageToken
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATUS\tUSER\tCREATED\tMODEL\tREGISTERED")
			for _, r := range out {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Status, r.User, r.CreatedAt.Local().Format(time.DateTime), r.Config.Model, r.RegisteredModel)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&all, "all", false, "follow page tokens to the end")
	cmd.Flags().StringVar(&o.User, "user", "", "only runs of this user")
	cmd.Flags().StringVar(&o.ExperimentPath, "experiment", "", "only runs of this experiment path")
	cmd.Flags().StringSliceVar(&o.Status, "status", nil, "only runs in these states")
	cmd.Flags().StringVar(&after, "after", "", "only runs created after this RFC 3339 time")
	cmd.Flags().StringVar(&before, "before", "", "only runs created before this RFC 3339 time")
	cmd.Flags().IntVar(&o.Limit, "limit", 0, "runs per page (default 100)")
	cmd.Flags().StringVar(&o.PageToken, "page-token", "", "continue a previous listing")
	return cmd
}

func runsGetCmd(cf *clientFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a run with its events, checkpoints and latest metrics",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.GetRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), r)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "name:      %s\nstatus:    %s\nmodel:     %s\nregister:  %s\n", r.Name, r.Status, r.Config.Model, r.RegisterTo)
			if l := r.Config.LoRA; r.Config.Method == "lora" && l != nil && l.Dropout != nil {
				fmt.Fprintf(w, "method:    lora, rank %d, alpha %g, rslora %v, dropout %g, targets %s\n", l.Rank, l.Alpha, l.UseRSLoRA,
					*l.Dropout, strings.Join(l.TargetModules, ","))
				if l.QuantizeBase != "" {
					fmt.Fprintf(w, "base:      held in %s while training (QLoRA); registers the merge into the unquantized base\n", l.QuantizeBase)
					if l.QuantizeEmbeddings {
						fmt.Fprintf(w, "           its embeddings and output head in %s too\n", l.QuantizeBase)
					}
				}
			}
			if r.RegisteredModel != "" {
				fmt.Fprintf(w, "registered: %s\n", r.RegisteredModel)
			}
			if r.Error != "" {
				fmt.Fprintf(w, "error:     %s\n", r.Error)
			}
			if m := r.Metrics; m != nil {
				fmt.Fprintf(w, "progress:  step %d/%d, %s%s\n", m.Step, m.TotalSteps, metricLine(m), etaText(r, time.Now()))
			}
			for _, ck := range r.Checkpoints {
				fmt.Fprintf(w, "checkpoint: step %d  %s\n", ck.Step, ck.Path)
			}
			printRanks(w, r.Ranks)
			for _, e := range r.Events {
				printEvent(w, e)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func metricLine(m *client.LatestMetrics) string {
	parts := []string{}
	if m.Loss != nil {
		parts = append(parts, fmt.Sprintf("loss %.4f", *m.Loss))
	}
	parts = append(parts, fmt.Sprintf("lr %.3g", m.LR), fmt.Sprintf("%.0f tok/s", m.TokensPerSec))
	if m.EvalLoss != nil {
		parts = append(parts, fmt.Sprintf("eval loss %.4f", *m.EvalLoss))
	}
	return strings.Join(parts, ", ")
}

// etaText is ", ETA 1m30s" for a run with an estimate, "" otherwise.
func etaText(r *client.Run, now time.Time) string {
	left, ok := r.Remaining(now)
	if !ok {
		return ""
	}
	return ", ETA " + left.Round(time.Second).String()
}

func printEvent(w io.Writer, e client.Event) {
	fmt.Fprintf(w, "%s  %-10s %s\n", e.Time.Local().Format(time.DateTime), e.Type, e.Message)
}

func runsEventsCmd(cf *clientFlags) *cobra.Command {
	var follow, asJSON bool
	cmd := &cobra.Command{
		Use:   "events NAME",
		Short: "Print a run's events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if follow && asJSON {
				return errors.New("--json prints the events so far: leave out --follow")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if asJSON {
				evs, err := c.Events(ctx, args[0], 0)
				if err != nil {
					return err
				}
				return printJSON(cmd.OutOrStdout(), evs)
			}
			var last int64
			for {
				evs, err := c.Events(ctx, args[0], last)
				if err != nil {
					return err
				}
				for _, e := range evs {
					printEvent(cmd.OutOrStdout(), e)
					last = e.ID
				}
				if !follow {
					return nil
				}
				r, err := c.GetRun(ctx, args[0])
				if err != nil {
					return err
				}
				if client.Terminal(r.Status) && len(evs) == 0 {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the run ends")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func runsCancelCmd(cf *clientFlags) *cobra.Command {
	var experiment string
	cmd := &cobra.Command{
		Use:   "cancel NAME... | cancel --experiment PATH",
		Short: "Cancel runs (the last checkpoint is kept)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 0) == (experiment == "") {
				return errors.New("name runs or --experiment (not both)")
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			res, err := c.CancelRuns(cmd.Context(), client.CancelRequest{Names: args, ExperimentPath: experiment})
			if err != nil {
				return err
			}
			for _, r := range res.Runs {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", r.Name, r.Status)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&experiment, "experiment", "", "cancel every active run of this experiment path")
	return cmd
}

func runsResumeCmd(cf *clientFlags) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "resume NAME [--wait]",
		Short: "Continue a STOPPED or FAILED run from its last checkpoint",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			run, err := c.ResumeRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", run.Name, run.Status)
			if !wait {
				return nil
			}
			final, err := follow(cmd, c, run.Name)
			if err != nil {
				return err
			}
			if final.Status != client.StatusCompleted {
				return fmt.Errorf("run %s %s: %s", run.Name, final.Status, final.Error)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the run; exit 0 only if it COMPLETED")
	return cmd
}

func runsDeleteCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a finished or cancelled run and its files",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			return c.DeleteRun(cmd.Context(), args[0])
		},
	}
}
