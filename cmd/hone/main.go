// Command hone fine-tunes Llama-family models on your own machines. This
// file and its siblings only wire flags to the packages that do the work.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	_ "hone/engine/cpu" // registers the "cpu" device that every command opens
)

func main() {
	ctx := interruptible(context.Background(), os.Stderr)
	root := &cobra.Command{
		Use:   "hone",
		Short: "Self-hosted fine-tuning of Llama-family models",
		Long: "Self-hosted fine-tuning of Llama-family models.\n\n" +
			"The first SIGINT or SIGTERM stops a command gracefully (a run saves a stop checkpoint, serve and worker drain); " +
			"a second one exits at once.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(devCmd(), benchCmd(), serveCmd(), workerCmd(), createCmd(), runsCmd(), catalogCmd())
	root.AddCommand(dataCmd(), generateCmd(), volumeCmd(), exportCmd(), endpointsCmd(), mergeCmd(), sweepCmd())
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hone:", err)
		os.Exit(1)
	}
}

// interruptible is ctx cancelled by the first SIGINT or SIGTERM, so that
// commands stop gracefully; it then restores the signals' default action,
// so that a second one ends the process at once, even in the middle of a
// training step that would take an hour, and says so on w.
func interruptible(ctx context.Context, w io.Writer) context.Context {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // no channel wants them any more: the runtime's default, exit by the signal
		fmt.Fprintln(w, "hone: stopping gracefully; a second interrupt (SIGINT or SIGTERM) exits immediately")
	}()
	return ctx
}

func logger() *slog.Logger { return slog.New(slog.NewTextHandler(os.Stderr, nil)) }
