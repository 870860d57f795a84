package generate

import (
	"fmt"

	"hone/engine"
)

// NextFeed is how many tokens the sequence's next model call runs: its
// next prompt chunk, or 1 past the prompt.
func (s *Sequence) NextFeed() int {
	if s.out == nil && s.chunk > 0 {
		return min(len(s.feed), s.chunk)
	}
	return len(s.feed)
}

// StepMixed makes one model call (engine.Extend) for several sequences of
// one model, none Done: each runs its next prompt chunk or, past its
// prompt, the token it sampled last. ok[i] reports that sequence i sampled
// ids[i]; one still reading its prompt samples nothing. Each samples what
// it would stepping alone, up to float rounding in the logits.
func StepMixed(seqs []*Sequence) (ids []int, ok []bool, err error) {
	decs, feeds := make([]*engine.Decoder, len(seqs)), make([][]int, len(seqs))
	for i, s := range seqs {
		if s.done {
			return nil, nil, fmt.Errorf("generate: sequence %d is done", i)
		}
		decs[i], feeds[i] = s.dec, s.feed[:s.NextFeed()]
	}
	logits, err := engine.Extend(decs, feeds)
	if err != nil {
		for _, s := range seqs {
			s.done = true
		}
		return nil, nil, err
	}
	ids, ok = make([]int, len(seqs)), make([]bool, len(seqs))
	for i, s := range seqs {
		if s.feed = s.feed[len(feeds[i]):]; len(s.feed) == 0 {
			ids[i], ok[i] = s.accept(logits[i]), true
		}
	}
	return ids, ok, nil
}
