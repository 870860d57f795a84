package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"hone/engine"
	"hone/export"
	"hone/generate"
)

// GenerateSpec describes one decoding benchmark: Streams sequences of
// PromptTokens random tokens each, decoded together NewTokens steps on the
// serving path (generate.StepBatch), greedy or sampled at Temperature.
type GenerateSpec struct {
	Dir string // model directory
	// GGUF, when set, is the file the llama.cpp peer decodes (Dir then
	// holds its weights unpacked) instead of an export of Dir.
	GGUF         string
	Streams      int
	PromptTokens int
	NewTokens    int // timed decode steps, after the prompt and one warm-up step
	Threads      int
	Seed         uint64
	// Precision is that of the weights decoding reads: fp32 (default, as
	// hone serve), bf16, nf4 (a QLoRA run's base: layer matrices in NF4,
	// embeddings and head in bf16) or quantized (GGUF's Q8_0/Q4_K
	// matrices).
	Precision string
	// Temperature 0 decodes greedily; above it each stream samples (no
	// top-k or top-p), seeded from Seed.
	Temperature float64
	// PrefillChunk is the most prompt tokens one model call reads (hone
	// serve reads 64 at a time between other streams' tokens); 0 = the
	// whole prompt in one call.
	PrefillChunk int
	// KernelTimes, when non-nil, receives time per device method over the
	// timed steps.
	KernelTimes func(lines []string)
	// Peers to run after hone: "llamacpp", "torch" (see PeerTools).
	Peers []string
	Tools PeerTools
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
	PrefillTokS   float64 `json:"prefill_tokens_per_s"` // prompt tokens of all streams read per second
	PrefillChunk  int     `json:"prefill_chunk,omitempty"`
	DecodeS       float64 `json:"decode_seconds"`
	PeakRSSBytes  int64   `json:"peak_rss_bytes"`
	WeightBytes   int64   `json:"weight_bytes"` // the model's weights held in memory (engine.Model.HeldWeightBytes)
	// Peers are other engines decoding the same model and prompt, one
	// stream, same threads, each with hone's tokens/s over its own (ratio).
	Peers []PeerResult `json:"peers,omitempty"`
}

// Generate runs the benchmark on a fresh device, then the peers, if any,
// on the same prompt.
func Generate(ctx context.Context, s GenerateSpec) (*GenerateResult, error) {
	if s.Streams <= 0 || s.PromptTokens <= 0 || s.NewTokens <= 0 || s.PrefillChunk < 0 {
		return nil, fmt.Errorf("bench generate: streams, prompt tokens and new tokens must be positive, the prefill chunk not negative")
	}
	if s.Precision == "" {
		s.Precision = "fp32" // what hone serve decodes with
	}
	if s.Precision != "bf16" && s.Precision != "fp32" && s.Precision != "nf4" && (s.Precision != "quantized" || s.GGUF == "") {
		return nil, fmt.Errorf("bench generate: precision %q: want bf16, fp32, nf4, or quantized for a GGUF file", s.Precision)
	}
	if len(s.Peers) > 0 && s.Precision == "nf4" {
		return nil, fmt.Errorf("bench generate: --peer decodes the same weights in another engine; none decodes hone's NF4 base (use --precision bf16 or fp32)")
	}
	if len(s.Peers) > 0 && s.Streams != 1 {
		return nil, fmt.Errorf("bench generate: --peer compares single-stream decoding; use --streams 1 (got %d)", s.Streams)
	}
	res, prompts, err := generateHone(ctx, s)
	if err != nil {
		return nil, err
	}
	for _, name := range s.Peers {
		p, err := runPeer(ctx, name, s, res.Threads, prompts[0])
		if err != nil {
			return nil, err
		}
		p.Ratio = res.TokensPerS / p.TokensPerS
		res.Peers = append(res.Peers, *p)
	}
	return res, nil
}

// generateHone is hone's side of the benchmark; it returns the prompts too.
func generateHone(ctx context.Context, s GenerateSpec) (*GenerateResult, [][]int, error) {
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{Threads: s.Threads})
	if err != nil {
		return nil, nil, err
	}
	var timed *engine.TimedDevice
	if s.KernelTimes != nil {
		timed = engine.NewTimedDevice(dev)
		dev = timed
	}
	var m *engine.Model
	switch s.Precision {
	case "quantized":
		m, _, err = export.LoadQuantized(s.GGUF, s.Dir, dev, s.Threads)
	case "nf4":
		m, err = engine.Load(s.Dir, dev, engine.Options{QuantizeBase: engine.QuantizeNF4, BF16: true})
	default:
		m, err = engine.Load(s.Dir, dev, engine.Options{DecodeBF16: s.Precision == "bf16"})
	}
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	c := m.Config
	if need := s.PromptTokens + s.NewTokens + 2; need > c.MaxPositionEmbeddings {
		return nil, nil, fmt.Errorf("bench generate: %d prompt and %d new tokens exceed the model's context window %d",
			s.PromptTokens, s.NewTokens, c.MaxPositionEmbeddings)
	}
	threads := s.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	res := &GenerateResult{Engine: "hone", Device: dev.Name(), Threads: threads, Precision: s.Precision, Params: c.NumParams(), Streams: s.Streams,
		PromptTokens: s.PromptTokens, NewTokens: s.NewTokens, PrefillChunk: s.PrefillChunk}
	prompts := randomPrompts(s.Seed, s.Streams, s.PromptTokens, c.VocabSize)
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
		// No stop ids: every stream runs its whole budget.
		p := generate.Params{MaxNewTokens: s.NewTokens + 2, Temperature: s.Temperature, Seed: s.Seed + uint64(i)}
		if seqs[i], err = generate.NewSequence(m, prompts[i], p, s.PrefillChunk); err != nil {
			return nil, nil, err
		}
		for first := true; first || seqs[i].Prefilling(); first = false {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			if _, _, err := seqs[i].Step(); err != nil {
				return nil, nil, err
			}
		}
	}
	res.PrefillS = time.Since(start).Seconds()
	res.PrefillTokS = float64(s.Streams*s.PromptTokens) / res.PrefillS
	for step := 0; step <= s.NewTokens; step++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if step == 1 { // step 0 warms up the batched matmul primitives
			start = time.Now()
			if timed != nil {
				timed.Reset()
			}
		}
		if _, err := generate.StepBatch(seqs); err != nil {
			return nil, nil, err
		}
	}
	res.DecodeS = time.Since(start).Seconds()
	if timed != nil {
		s.KernelTimes(timed.Report())
	}
	res.TokensPerS = float64(s.Streams*s.NewTokens) / res.DecodeS
	res.StreamTokensS = float64(s.NewTokens) / res.DecodeS
	res.PeakRSSBytes = PeakRSS()
	res.WeightBytes = m.HeldWeightBytes()
	return res, prompts, nil
}

// randomPrompts are the benchmark's prompts: streams rows of n tokens drawn
// from seed, so peers can be given the same ones.
func randomPrompts(seed uint64, streams, n, vocab int) [][]int {
	r := rand.New(rand.NewPCG(seed, 2))
	out := make([][]int, streams)
	for i := range out {
		out[i] = make([]int, n)
		for j := range out[i] {
			out[i][j] = r.IntN(vocab)
		}
	}
	return out
}
