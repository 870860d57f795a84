package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"hone/engine"
	"hone/generate"
	"hone/serving"
)

// ServeSpec is `hone bench generate --background-streams N`: a prompt of
// PromptTokens random tokens submitted to hone serve's batch scheduler
// while Background other streams decode, as a server with a long prompt
// arriving among running chats.
type ServeSpec struct {
	Dir          string // model directory
	PromptTokens int
	Background   int
	Threads      int
	Seed         uint64
}

// ServeResult is what `hone bench generate --background-streams N --json`
// prints: how fast the long prompt was read, and the gaps between the
// background streams' tokens while it was (what their users see).
type ServeResult struct {
	Engine       string  `json:"engine"`
	Device       string  `json:"device"`
	Threads      int     `json:"threads"`
	Params       int64   `json:"params"`
	PromptTokens int     `json:"prompt_tokens"`
	Background   int     `json:"background_streams"`
	PrefillS     float64 `json:"prefill_seconds"`      // from submitting the prompt to its first token
	PrefillTokS  float64 `json:"prefill_tokens_per_s"` // prompt tokens read per second meanwhile
	// The background streams' inter-token gaps while the prompt was read:
	// each gap ending after it was submitted and by its first token.
	Gaps            int     `json:"gaps"`
	GapP50S         float64 `json:"gap_p50_seconds"`
	GapP99S         float64 `json:"gap_p99_seconds"`
	GapMaxS         float64 `json:"gap_max_seconds"`
	BackgroundTokS  float64 `json:"background_tokens_per_s"` // per stream, meanwhile
	BackgroundEnded bool    `json:"background_ended_early,omitempty"`
	PeakRSSBytes    int64   `json:"peak_rss_bytes"`
}

// Serve runs the benchmark on a fresh device and the model in s.Dir (fp32
// weights, as hone serve decodes).
func Serve(ctx context.Context, s ServeSpec) (*ServeResult, error) {
	if s.PromptTokens <= 0 || s.Background <= 0 {
		return nil, fmt.Errorf("bench generate: prompt tokens and background streams must be positive")
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: s.Threads})
	if err != nil {
		return nil, err
	}
	m, err := engine.Load(s.Dir, dev, engine.Options{})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	c := m.Config
	const short = 16 // the background streams' prompts
	// Enough tokens for a turn each while the prompt is read a chunk a turn.
	bgTokens := min(c.MaxPositionEmbeddings-short, 2*s.PromptTokens/16+256)
	if need := s.PromptTokens + 1; need > c.MaxPositionEmbeddings {
		return nil, fmt.Errorf("bench generate: a prompt of %d tokens exceeds the model's context window %d (max_position_embeddings in %s/config.json)",
			s.PromptTokens, c.MaxPositionEmbeddings, s.Dir)
	}
	threads := s.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	res := &ServeResult{Engine: "hone", Device: dev.Name(), Threads: threads, Params: c.NumParams(), PromptTokens: s.PromptTokens, Background: s.Background}
	prompts := randomPrompts(s.Seed, s.Background+1, s.PromptTokens, c.VocabSize)
	sc := serving.NewScheduler(s.Background + 1)
	bg := make([]*serving.Generation, s.Background)
	defer func() {
		for _, g := range bg {
			if g != nil {
				g.Close()
			}
		}
	}()
	for i := range bg {
		// No stop ids: every stream runs its whole budget.
		if bg[i], err = sc.Start(m, prompts[i+1][:short], generate.Params{MaxNewTokens: bgTokens, Seed: s.Seed + uint64(i)}); err != nil {
			return nil, err
		}
	}
	for _, g := range bg { // decoding before the prompt comes
		if _, _, err := g.Wait(ctx, 2); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	long, err := sc.Start(m, prompts[0], generate.Params{MaxNewTokens: 1, Seed: s.Seed})
	if err != nil {
		return nil, err
	}
	defer long.Close()
	at, _, err := long.Wait(ctx, 1)
	if err != nil {
		return nil, err
	}
	if len(at) == 0 {
		return nil, fmt.Errorf("bench generate: the long prompt ended without a token")
	}
	end := at[0]
	res.PrefillS = end.Sub(start).Seconds()
	res.PrefillTokS = float64(s.PromptTokens) / res.PrefillS
	var gaps []float64
	var made int
	for _, g := range bg {
		at, ended, err := g.Wait(ctx, 0)
		if err != nil {
			return nil, err
		}
		last := time.Time{}
		for _, t := range at {
			if !t.After(start) {
				last = t
				continue
			}
			if t.After(end) {
				break
			}
			made++
			gaps = append(gaps, t.Sub(last).Seconds())
			last = t
		}
		if ended && (len(at) == 0 || !at[len(at)-1].After(end)) {
			res.BackgroundEnded = true
		}
	}
	if len(gaps) == 0 {
		return nil, fmt.Errorf("bench generate: the background streams made no token while the prompt was read")
	}
	slices.Sort(gaps)
	res.Gaps = len(gaps)
	res.GapP50S, res.GapP99S, res.GapMaxS = quantile(gaps, 0.50), quantile(gaps, 0.99), gaps[len(gaps)-1]
	res.BackgroundTokS = float64(made) / float64(s.Background) / res.PrefillS
	res.PeakRSSBytes = PeakRSS()
	return res, nil
}

// quantile is the q-quantile of sorted xs (nearest rank).
func quantile(xs []float64, q float64) float64 {
	i := int(q*float64(len(xs))+0.999999) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}
