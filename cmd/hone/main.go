// Command hone fine-tunes Llama-family models on your own machines. This
// file and its siblings only wire flags to the packages that do the work.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	_ "hone/engine/cpu" // registers the "cpu" device that every command opens
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:           "hone",
		Short:         "Self-hosted fine-tuning of Llama-family models",
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

func logger() *slog.Logger { return slog.New(slog.NewTextHandler(os.Stderr, nil)) }
