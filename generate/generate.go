// Package generate decodes text from an engine model with the sampling
// settings users know from hosted products: temperature, top-k, top-p, a
// token budget and stop tokens. Sampling is deterministic for a seed.
package generate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"hone/engine"
)

// Params are the sampling settings. Temperature 0 decodes greedily.
type Params struct {
	MaxNewTokens int
	Temperature  float64
	TopK         int     // 0 = no limit
	TopP         float64 // 0 or 1 = no limit
	Seed         uint64
	StopIDs      []int // generation ends after emitting one of these
}

// EvalPromptParams are the hosted product's settings for eval prompts.
func EvalPromptParams(seed uint64) Params {
	return Params{MaxNewTokens: 100, Temperature: 1, TopK: 50, TopP: 0.95, Seed: seed}
}

// Complete appends up to MaxNewTokens sampled tokens to prompt and returns
// only the new ones (a stop token, when reached, is included). Decoding
// keeps a key/value cache, so each new token costs one token's forward pass.
func Complete(ctx context.Context, m *engine.Model, prompt []int, p Params) ([]int, error) {
	return Stream(ctx, m, prompt, p, nil)
}

// Stream is Complete that hands each new token to onToken (when non-nil)
// as soon as it is sampled, a stop token included. onToken ends the
// generation early by returning false; its error ends it too and is
// returned. Stream returns the new tokens, the last one included.
func Stream(ctx context.Context, m *engine.Model, prompt []int, p Params, onToken func(id int) (more bool, err error)) ([]int, error) {
	seq, err := NewSequence(m, prompt, p, 0)
	if err != nil {
		return nil, err
	}
	defer seq.Close()
	for !seq.Done() {
		if len(seq.Tokens()) > 0 {
			if err := ctx.Err(); err != nil {
				return seq.Tokens(), err
			}
		}
		id, ok, err := seq.Step()
		if err != nil {
			return seq.Tokens(), err
		}
		if ok && onToken != nil {
			more, err := onToken(id)
			if err != nil || !more {
				return seq.Tokens(), err
			}
		}
	}
	return seq.Tokens(), nil
}

// Sequence is one generation advanced one model call at a time, for
// callers that schedule the calls of several generations on one device
// (serving interleaves requests). It is not safe for concurrent use.
type Sequence struct {
	dec   *engine.Decoder
	p     Params
	r     *rand.Rand
	limit int   // prompt plus budget, within the context window
	chunk int   // most prompt tokens per step; 0 = all at once
	feed  []int // tokens the next step runs through the model
	out   []int
	done  bool
}

// NewSequence starts generating after prompt; it allocates the key/value
// cache on m's device. prefillChunk > 0 splits the prompt into steps of at
// most that many tokens, so that no step holds the device for long.
func NewSequence(m *engine.Model, prompt []int, p Params, prefillChunk int) (*Sequence, error) {
	if len(prompt) == 0 {
		return nil, fmt.Errorf("generate: empty prompt")
	}
	s := &Sequence{p: p, limit: min(len(prompt)+p.MaxNewTokens, m.Config.MaxPositionEmbeddings), chunk: prefillChunk, feed: prompt}
	if len(prompt) >= s.limit {
		s.done = true
		return s, nil
	}
	var err error
	if s.dec, err = m.NewDecoder(s.limit); err != nil {
		return nil, err
	}
	s.r = rand.New(rand.NewPCG(p.Seed, 0x9e3779b97f4a7c15))
	return s, nil
}

// Step makes one model call: the next piece of the prompt or the token
// sampled last. Once the whole prompt is in, it samples the next token and
// returns it with ok true. Step must not be called once Done.
func (s *Sequence) Step() (id int, ok bool, err error) {
	n := len(s.feed)
	if s.out == nil && s.chunk > 0 {
		n = min(n, s.chunk)
	}
	logits, err := s.dec.Append(s.feed[:n])
	if err != nil {
		s.done = true
		return 0, false, err
	}
	if s.feed = s.feed[n:]; len(s.feed) > 0 {
		return 0, false, nil
	}
	return s.accept(logits), true, nil
}

// accept samples the next token from the logits after the last one fed.
func (s *Sequence) accept(logits []float32) int {
	next := Sample(logits, s.p, s.r)
	s.out = append(s.out, next)
	s.feed = []int{next}
	// The token just sampled sits at position dec.Len(); stop when the
	// budget or the context window has no room for another.
	s.done = slices.Contains(s.p.StopIDs, next) || s.dec.Len()+1 >= s.limit
	return next
}

// Prefilling reports that the prompt is not all in yet: the next Step runs
// a piece of it rather than the one token sampled last.
func (s *Sequence) Prefilling() bool { return s.out == nil }

// StepBatch is Step for several sequences of one model, all past their
// prompts and not Done, in one model pass (engine.DecodeStep): it returns
// the token each samples next. A sequence samples what it would sample
// stepping alone, up to float rounding in the logits.
func StepBatch(seqs []*Sequence) ([]int, error) {
	decs, feed := make([]*engine.Decoder, len(seqs)), make([]int, len(seqs))
	for i, s := range seqs {
		if s.done || s.out == nil {
			return nil, fmt.Errorf("generate: sequence %d is done or still reading its prompt", i)
		}
		decs[i], feed[i] = s.dec, s.feed[0]
	}
	logits, err := engine.DecodeStep(decs, feed)
	if err != nil {
		for _, s := range seqs {
			s.done = true
		}
		return nil, err
	}
	ids := make([]int, len(seqs))
	sampled := slices.ContainsFunc(seqs, func(s *Sequence) bool { return s.p.Temperature > 0 })
	workers := min(runtime.GOMAXPROCS(0), len(seqs))
	if !sampled || workers < 2 { // an arg-max is too cheap to share out
		for i, s := range seqs {
			ids[i] = s.accept(logits[i])
		}
		return ids, nil
	}
	// Sampling reads the whole vocabulary's logits: the sequences, each
	// with its own random source, sample on all cores.
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(seqs); i = int(next.Add(1) - 1) {
				ids[i] = seqs[i].accept(logits[i])
			}
		}()
	}
	wg.Wait()
	return ids, nil
}

// Done reports that the generation has ended: a stop token was sampled or
// there is no room for another token.
func (s *Sequence) Done() bool { return s.done }

// Close frees the sequence's key/value cache on the device; the tokens stay.
func (s *Sequence) Close() {
	if s.dec != nil {
		s.dec.Close()
		s.dec = nil
	}
}

// Tokens returns the tokens sampled so far, a stop token included.
func (s *Sequence) Tokens() []int { return s.out }
