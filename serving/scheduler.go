package serving

import (
	"context"
	"time"

	"hone/engine"
	"hone/generate"
)

// Scheduler is the service's batch scheduler (continuous batching, prompts
// read in chunks between running streams' tokens) without the service
// around it: generations of token ids on models the caller loaded. `hone
// bench generate --background-streams` measures with it what running
// streams see while a long prompt is read.
type Scheduler struct{ b *batcher }

// NewScheduler runs at most maxBatch generations at once; the others wait.
func NewScheduler(maxBatch int) *Scheduler {
	return &Scheduler{b: &batcher{maxBatch: max(1, maxBatch), maxQueue: 1 << 30}}
}

// Generation is one generation a Scheduler runs.
type Generation struct{ s *slot }

// Start queues a generation of up to p.MaxNewTokens tokens after prompt
// on m; the scheduler records when each token is made.
func (sc *Scheduler) Start(m *engine.Model, prompt []int, p generate.Params) (*Generation, error) {
	s := newSlot(m, prompt, p)
	s.timed = true
	if err := sc.b.enqueue(s); err != nil {
		return nil, err
	}
	return &Generation{s}, nil
}

// Wait blocks until the generation made n tokens or ended, and returns when
// each of its tokens so far was made and whether it ended (with its error).
func (g *Generation) Wait(ctx context.Context, n int) (at []time.Time, ended bool, err error) {
	for {
		g.s.mu.Lock()
		at, ended, err = append([]time.Time(nil), g.s.at...), g.s.ended, g.s.err
		g.s.mu.Unlock()
		if len(at) >= n || ended {
			return at, ended, err
		}
		select {
		case <-g.s.wake:
		case <-ctx.Done():
			return at, false, ctx.Err()
		}
	}
}

// Close ends the generation and waits until its cache is freed.
func (g *Generation) Close() { g.s.leave() }
