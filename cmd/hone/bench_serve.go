package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"hone/bench"
)

// printServe runs `hone bench generate --background-streams` and prints its
// result, or one JSON object as the last line.
func printServe(w io.Writer, ctx context.Context, s bench.ServeSpec, asJSON bool) error {
	res, err := bench.Serve(ctx, s)
	if err != nil {
		return err
	}
	if asJSON {
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, string(b))
		return nil
	}
	fmt.Fprintf(w, "%d-token prompt among %d decoding streams, %d threads: prefill %.1f tokens/s (%.2f s); the streams' inter-token gaps meanwhile: p50 %.3f s, p99 %.3f s, max %.3f s (%d gaps, %.1f tokens/s each)\n",
		res.PromptTokens, res.Background, res.Threads, res.PrefillTokS, res.PrefillS, res.GapP50S, res.GapP99S, res.GapMaxS, res.Gaps, res.BackgroundTokS)
	if res.BackgroundEnded {
		fmt.Fprintln(w, "(a background stream ran out of tokens before the prompt was read)")
	}
	return nil
}
