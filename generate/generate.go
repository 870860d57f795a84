// Package generate decodes text from an engine model with the sampling
// settings users know from hosted products: temperature, top-k, top-p, a
// token budget and stop tokens. Sampling is deterministic for a seed.
package generate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

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
	if len(prompt) == 0 {
		return nil, fmt.Errorf("generate: empty prompt")
	}
	limit := min(len(prompt)+p.MaxNewTokens, m.Config.MaxPositionEmbeddings)
	if len(prompt) >= limit {
		return nil, nil
	}
	dec, err := m.NewDecoder(limit)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	r := rand.New(rand.NewPCG(p.Seed, 0x9e3779b97f4a7c15))
	logits, err := dec.Append(prompt)
	if err != nil {
		return nil, err
	}
	var out []int
	for {
		next := Sample(logits, p, r)
		out = append(out, next)
		if onToken != nil {
			more, err := onToken(next)
			if err != nil || !more {
				return out, err
			}
		}
		// The token just sampled sits at position dec.Len(); stop when the
		// budget or the context window has no room for another.
		if slices.Contains(p.StopIDs, next) || dec.Len()+1 >= limit {
			return out, nil
		}
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if logits, err = dec.Append([]int{next}); err != nil {
			return out, err
		}
	}
}

// Sample draws one token id from logits as HF's sampling does: temperature,
// then top-k, then top-p (nucleus) filtering.
func Sample(logits []float32, p Params, r *rand.Rand) int {
	if p.Temperature <= 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return best
	}
	type cand struct {
		id int
		l  float64
	}
	c := make([]cand, len(logits))
	for i, v := range logits {
		c[i] = cand{i, float64(v) / p.Temperature}
	}
	slices.SortFunc(c, func(a, b cand) int {
		if a.l != b.l {
			if a.l > b.l {
				return -1
			}
			return 1
		}
		return a.id - b.id
	})
	if p.TopK > 0 && p.TopK < len(c) {
		c = c[:p.TopK]
	}
	probs := make([]float64, len(c))
	var sum float64
	for i := range c {
		probs[i] = math.Exp(c[i].l - c[0].l)
		sum += probs[i]
	}
	keep := len(c)
	if p.TopP > 0 && p.TopP < 1 {
		var cum float64
		for i := range probs {
			cum += probs[i] / sum
			if cum >= p.TopP {
				keep = i + 1
				break
			}
		}
	}
	var total float64
	for _, q := range probs[:keep] {
		total += q
	}
	u := r.Float64() * total
	for i, q := range probs[:keep] {
		u -= q
		if u < 0 {
			return c[i].id
		}
	}
	return c[keep-1].id
}
