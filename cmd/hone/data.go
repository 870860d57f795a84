package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"hone/dataset"
)

// dataFlags are the flags shared by the data subcommands.
type dataFlags struct {
	model, task, data string
	ctxLen            int
	overlong, loss    string
	split             string
	version           int64
}

func (f *dataFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.model, "model", "", "model directory (Hugging Face format: tokenizer.json, tokenizer_config.json, config.json)")
	cmd.Flags().StringVar(&f.task, "task", "chat", "task type: chat, instruct or cpt")
	cmd.Flags().StringVar(&f.data, "data", "", "data: a JSONL file or folder of .jsonl files (chat, instruct); a .txt file or folder of .txt files (cpt); "+
		"or a table: a .parquet file or folder, a Hugging Face dataset folder or cached id (org/name), a Delta table folder "+
		"(columns: messages; prompt and response; text)")
	cmd.Flags().StringVar(&f.split, "split", "train", "split of a Hugging Face dataset to read (config/split for one config of several)")
	cmd.Flags().Int64Var(&f.version, "version", -1, "version of a Delta table to read (time travel; default the latest)")
	cmd.Flags().IntVar(&f.ctxLen, "context-length", 0, "tokens per training row (default: the model's max_position_embeddings; a run shortens it to what fits in memory)")
	cmd.Flags().StringVar(&f.overlong, "overlong", "drop", "chat/instruct examples longer than the context length: truncate or drop")
	cmd.Flags().StringVar(&f.loss, "loss", "assistant", "chat tokens trained: assistant (every assistant turn), last (last assistant turn) or all")
	_ = cmd.MarkFlagRequired("model")
	_ = cmd.MarkFlagRequired("data")
}

func (f *dataFlags) options() (dataset.Task, dataset.Options, error) {
	data, err := localVolumePath(f.data)
	if err != nil {
		return "", dataset.Options{}, err
	}
	f.data = data
	task, err := dataset.ParseTask(f.task)
	opt := dataset.Options{ContextLength: f.ctxLen, Overlong: f.overlong, ChatLoss: f.loss, Split: f.split}
	if f.version >= 0 {
		opt.Version = &f.version
	}
	return task, opt, err
}

func dataCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "data",
		Short: "Validate, preview and prepare training data",
	}
	cmd.AddCommand(dataValidateCmd(), dataPreviewCmd(), dataPrepareCmd())
	return cmd
}

func dataValidateCmd() *cobra.Command {
	var f dataFlags
	var asJSON bool
	var batch int
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check training data against a model and report problems and statistics",
		Long: `Checks every record (file:line, field and rule for each problem), counts examples longer than
the context length, and reports tokens, trained tokens, length percentiles, rows after packing,
optimizer steps per epoch and the guidance warnings. Exits non-zero when any record is bad.
The default context length is the model's max_position_embeddings; hone create shortens it to what fits
in memory and its validation reports with that length.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			task, opt, err := f.options()
			if err != nil {
				return err
			}
			opt.BatchRows = batch
			r, err := dataset.Validate(cmd.Context(), f.model, task, f.data, opt)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				r.WriteText(out)
			}
			if !r.OK() {
				return fmt.Errorf("%d problem(s) in %s", r.ProblemCount, f.data)
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "write the report as JSON")
	cmd.Flags().IntVar(&batch, "batch", 8, "rows per optimizer step, for the steps-per-epoch estimate")
	return cmd
}

func dataPreviewCmd() *cobra.Command {
	var f dataFlags
	var limit int
	cmd := &cobra.Command{
		Use:   "preview",
		Short: "Print formatted, tokenized examples as JSON lines",
		Long: `Writes one JSON object per example before packing to stdout:
{"text": rendered text, "input_ids": [...], "labels": [...]} with labels -100 where not trained
(cpt: one object per context-length row). Bad records are reported on stderr and skipped.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			task, opt, err := f.options()
			if err != nil {
				return err
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			defer w.Flush()
			enc := json.NewEncoder(w)
			enc.SetEscapeHTML(false)
			bad := 0
			err = dataset.Preview(cmd.Context(), f.model, task, f.data, opt, limit,
				func(ex dataset.Example) error { return enc.Encode(ex) },
				func(p dataset.Problem) { bad++; fmt.Fprintln(cmd.ErrOrStderr(), p.String()) })
			if err == nil && bad > 0 {
				err = fmt.Errorf("%d problem(s) in %s", bad, f.data)
			}
			return err
		},
	}
	f.register(cmd)
	cmd.Flags().IntVar(&limit, "limit", 5, "examples (cpt: rows) to print; 0 for all")
	return cmd
}

func dataPrepareCmd() *cobra.Command {
	var f dataFlags
	var cache, evalData, evalSplit string
	var evalFrac float64
	cmd := &cobra.Command{
		Use:   "prepare",
		Short: "Tokenize and pack data into the cache, as a training run would",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			task, opt, err := f.options()
			if err != nil {
				return err
			}
			if evalData, err = localVolumePath(evalData); err != nil {
				return err
			}
			opt.EvalData, opt.EvalFraction, opt.EvalSplit = evalData, evalFrac, evalSplit
			errw := cmd.ErrOrStderr()
			p, err := dataset.Prepare(cmd.Context(), dataset.PrepareSpec{ModelDir: f.model, Task: task, Data: f.data, CacheDir: cache, Options: opt}, progressPrinter(errw))
			if err != nil {
				var pe *dataset.ProblemsError
				if errors.As(err, &pe) {
					for _, pr := range pe.Problems {
						fmt.Fprintln(errw, pr.String())
					}
					return fmt.Errorf("%d problem(s) in the data", pe.Count)
				}
				return err
			}
			defer p.Close()
			st := p.Stats()
			fmt.Fprintf(cmd.OutOrStdout(), "fingerprint %s (cached: %t)\n%s\nexamples %d  tokens %d  trained %d  rows %d  packing %.1f%%\n",
				p.Fingerprint(), p.FromCache, p.Dir(), st.Examples, st.Tokens, st.TrainedTokens, st.Rows, 100*st.Efficiency)
			if ev := p.Eval(); ev != nil {
				es := ev.Stats()
				fmt.Fprintf(cmd.OutOrStdout(), "eval: examples %d  tokens %d  rows %d\n", es.Examples, es.Tokens, es.Rows)
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&cache, "cache", ".cache/data", "cache directory for prepared data")
	cmd.Flags().StringVar(&evalData, "eval-data", "", "separate eval data of the same task type")
	cmd.Flags().StringVar(&evalSplit, "eval-split", "", "split of a Hugging Face eval dataset (default validation, else test)")
	cmd.Flags().Float64Var(&evalFrac, "eval-fraction", 0, "hold out this fraction of the examples (cpt: rows) for eval")
	return cmd
}

// progressPrinter reports progress at most twice a second.
func progressPrinter(w io.Writer) func(done, total int64) {
	var last time.Time
	return func(done, total int64) {
		if now := time.Now(); now.Sub(last) > 500*time.Millisecond || done == total {
			last = now
			if total > 0 {
				fmt.Fprintf(w, "\rtokenizing: %5.1f%% (%d/%d MB)", 100*float64(done)/float64(total), done>>20, total>>20)
			}
			if done == total {
				fmt.Fprintln(w)
			}
		}
	}
}
