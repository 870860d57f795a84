package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"hone/client"
	"hone/collective"
	"hone/runs"
)

// registerGangFlags adds the flags of a worker's part in multi-node runs.
func registerGangFlags(cmd *cobra.Command, g *runs.GangConfig) {
	fl := cmd.Flags()
	fl.StringVar(&g.CollectiveAddr, "collective-addr", "127.0.0.1",
		"where this worker's ranks of multi-node runs listen: HOST, HOST:PORT (the rendezvous store's port when it is rank 0) or an interface name; use an address on a private network between the workers")
	fl.DurationVar(&g.CollectiveTimeout, "collective-timeout", collective.DefaultTimeout,
		"a multi-node run's ranks leave a collective whose peer is silent this long (the run goes back to the queue)")
	fl.DurationVar(&g.RendezvousTimeout, "rendezvous-timeout", 0,
		"how long rank 0 of a multi-node run waits for the other workers to join before re-queuing it (default 5m)")
	fl.DurationVar(&g.WorkersWindow, "workers-window", 0,
		"a run may ask for as many nodes as workers worked the queue within this window (default 24h)")
}

// printRanks lists a multi-node run's ranks, one line each.
func printRanks(w io.Writer, ranks []client.RunRank) {
	for _, k := range ranks {
		left := "in"
		if k.LeftAt != nil {
			left = "left " + k.LeftAt.Local().Format(time.DateTime) + ": " + k.Note
		}
		fmt.Fprintf(w, "rank:      attempt %d rank %d  %s on %s  joined %s  %s\n", k.Attempt, k.Rank, k.Worker, k.Host,
			k.JoinedAt.Local().Format(time.DateTime), left)
	}
}
