package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"hone/engine"
	"hone/generate"
)

// GenerateSpec describes one decoding benchmark: Streams sequences of
// PromptTokens random tokens each, decoded together NewTokens steps on the
// serving path (generate.StepBatch, greedy).
type GenerateSpec struct {
	Dir          string // model directory
	Streams      int
	PromptTokens int
	NewTokens    int // timed decode steps, after the prompt and one warm-up step
	Threads      int
	Seed         uint64
	Precision    string // of the weights decoding reads: bf16 (default) or fp32
	// KernelTimes, when non-nil, receives time per device method over the
	// timed steps.
	KernelTimes func(lines []string)
}

// GenerateResult is what `hone bench generate --json` prints.
type GenerateResult struct {
	Engine        string  `json:"engine"`
	Device        string  `json:"device"`
	Threads       int     `json:"threads"`
	Precision     string  `json:"precision"`
	Params        int64   `json:"params"`
	Streams       int     `json:"streams"`
	PromptTokens  int     `json:"prompt_tokens"`
	NewTokens     int     `json:"new_tokens"`
	TokensPerS    float64 `json:"tokens_per_s"`        // generated tokens of all streams per second
	StreamTokensS float64 `json:"stream_tokens_per_s"` // what each stream sees
	PrefillS      float64 `json:"prefill_seconds"`
	DecodeS       float64 `json:"decode_seconds"`
	PeakRSSBytes  int64   `json:"peak_rss_bytes"`
}

// Generate runs the benchmark on a fresh device.
func Generate(ctx context.Context, s GenerateSpec) (*GenerateResult, error) {
	if s.Streams <= 0 || s.PromptTokens <= 0 || s.NewTokens <= 0 {
		return nil, fmt.Errorf("bench generate: streams, prompt tokens and new tokens must be positive")
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: s.Threads})
	if err != nil {
		return nil, err
	}
	if s.Precision == "" {
		s.Precision = "bf16"
	}
	if s.Precision != "bf16" && s.Precision != "fp32" {
		return nil, fmt.Errorf("bench generate: precision %q: want bf16 or fp32", s.Precision)
	}
	var timed *engine.TimedDevice
	if s.KernelTimes != nil {
		timed = engine.NewTimedDevice(dev)
		dev = timed
	}
	m, err := engine.Load(s.Dir, dev, engine.Options{DecodeBF16: s.Precision == "bf16"})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	c := m.Config
	if need := s.PromptTokens + s.NewTokens + 2; need > c.MaxPositionEmbeddings {
		return nil, fmt.Errorf("bench generate: %d prompt and %d new tokens exceed the model's context window %d",
			s.PromptTokens, s.NewTokens, c.MaxPositionEmbeddings)
	}
	threads := s.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	res := &GenerateResult{Engine: "hone", Device: dev.Name(), Threads: threads, Precision: s.Precision, Params: c.NumParams(), Streams: s.Streams,
		PromptTokens: s.PromptTokens, NewTokens: s.NewTokens}
	r := rand.New(rand.NewPCG(s.Seed, 2))
	seqs := make([]*generate.Sequence, s.Streams)
	defer func() {
		for _, q := range seqs {
			if q != nil {
				q.Close()
			}
		}
	}()
	start := time.Now()
	for i := range seqs {
		prompt := make([]int, s.PromptTokens)
		for j := range prompt {
			prompt[j] = r.IntN(c.VocabSize)
		}
		// Greedy, no stop ids: every stream runs its whole budget.
		if seqs[i], err = generate.NewSequence(m, prompt, generate.Params{MaxNewTokens: s.NewTokens + 2}, 0); err != nil {
			return nil, err
		}
		if _, _, err := seqs[i].Step(); err != nil {
			return nil, err
		}
	}
	res.PrefillS = time.Since(start).Seconds()
	for step := 0; step <= s.NewTokens; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if step == 1 { // step 0 warms up the batched matmul primitives
			start = time.Now()
			if timed != nil {
				timed.Reset()
			}
		}
		if _, err := generate.StepBatch(seqs); err != nil {
			return nil, err
		}
	}
	res.DecodeS = time.Since(start).Seconds()
	if timed != nil {
		s.KernelTimes(timed.Report())
	}
	res.TokensPerS = float64(s.Streams*s.NewTokens) / res.DecodeS
	res.StreamTokensS = float64(s.NewTokens) / res.DecodeS
	res.PeakRSSBytes = PeakRSS()
	return res, nil
}
