package serving

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"hone/engine"
	"hone/generate"
)

// ErrBusy refuses a request because Config.MaxQueue requests already wait
// for a place in the running batch; the client should retry later.
var ErrBusy = errors.New("serving: too many requests waiting")

// batcher runs every generation on the service's one device in a single
// loop (continuous batching): each turn makes one model call per model
// holding the next token of every running sequence and the next chunks of
// the prompts being read, up to prefillBudget tokens of them, so the
// weights are read once per turn and long prompts delay running streams by
// a bounded chunk, not a whole prompt. Requests join
// and leave the running batch between turns; beyond maxBatch running
// sequences they wait, and beyond maxQueue waiting they are refused.
type batcher struct {
	maxBatch, maxQueue int
	kvBudget           int64 // bytes of KV cache the running slots may hold; 0 = no bound

	mu       sync.Mutex
	incoming []*slot // submitted since the loop last looked
	queued   int     // submitted but not yet running
	running  bool    // the loop goroutine is alive

	// owned by the loop goroutine
	waiting, active []*slot
	kvUsed          int64 // KV bytes the active slots hold at their full length
	// perToken is the measured seconds a turn takes per prompt token it
	// reads (0: not measured yet), which sizes prefill budgets; turnFed
	// is how many prompt tokens the last turn read.
	perToken float64
	turnFed  int
	now      func() time.Time // time.Now; tests fake it
}

// slot is one generation in the batcher. The loop produces its tokens
// ahead of the request, which reads them at its own pace: a slow reader
// delays only itself.
type slot struct {
	m      *engine.Model
	prompt []int
	p      generate.Params
	kv     int64              // KV cache bytes at the full length, prompt + max tokens
	seq    *generate.Sequence // owned by the loop
	over   bool               // finished; owned by the loop

	mu    sync.Mutex
	toks  []int
	at    []time.Time // when each token was made, when timed (Scheduler)
	timed bool
	err   error
	ended bool // no more tokens will come
	wake  chan struct{}
	left  atomic.Bool   // the request reads no more
	freed chan struct{} // closed once the loop released the slot's cache
}

// submit queues a generation; ErrBusy when the queue is full.
func (b *batcher) submit(m *engine.Model, prompt []int, p generate.Params) (*slot, error) {
	s := newSlot(m, prompt, p)
	return s, b.enqueue(s)
}

func newSlot(m *engine.Model, prompt []int, p generate.Params) *slot {
	return &slot{m: m, prompt: prompt, p: p, wake: make(chan struct{}, 1), freed: make(chan struct{}),
		kv: m.Config.KVCacheBytes(len(prompt) + p.MaxNewTokens)}
}

// enqueue queues s; ErrBusy when the queue is full.
func (b *batcher) enqueue(s *slot) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.queued >= b.maxQueue {
		return ErrBusy
	}
	b.queued++
	b.incoming = append(b.incoming, s)
	if !b.running {
		b.running = true
		go b.loop()
	}
	return nil
}

// Queued is how many requests wait for a place in the running batch.
func (b *batcher) Queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queued
}

// leave tells the loop the request reads no more and waits until the
// slot's cache is freed, so the model can be unloaded after.
func (s *slot) leave() {
	s.left.Store(true)
	<-s.freed
}

// read returns the tokens after the first from, whether the generation
// has ended and its error.
func (s *slot) read(from int) ([]int, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.toks[from:], s.ended, s.err
}

func (s *slot) push(id int) {
	s.mu.Lock()
	s.toks = append(s.toks, id)
	if s.timed {
		s.at = append(s.at, time.Now())
	}
	s.mu.Unlock()
	s.signal()
}

func (s *slot) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// finish ends the generation (err may be nil) and frees its cache.
func (s *slot) finish(err error) {
	s.over = true
	if s.seq != nil {
		s.seq.Close()
		s.seq = nil
	}
	s.mu.Lock()
	s.ended, s.err = true, err
	s.mu.Unlock()
	s.signal()
	close(s.freed)
}

// loop runs turns until no generation is left.
func (b *batcher) loop() {
	for b.admit() {
		b.step()
	}
}

// admit takes in new slots, drops those whose requests left or that
// ended, and fills the batch from the waiting ones in arrival order. It
// reports whether anything is left to run; if not, the loop ends.
func (b *batcher) admit() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.waiting = append(b.waiting, b.incoming...)
	b.incoming = nil
	keep := func(list []*slot, queued bool) []*slot {
		out := list[:0]
		for _, s := range list {
			switch {
			case s.over:
				if !queued {
					b.kvUsed -= s.kv
				}
			case s.left.Load():
				if queued {
					b.queued--
				} else {
					b.kvUsed -= s.kv
				}
				s.finish(nil)
			default:
				out = append(out, s)
			}
		}
		return out
	}
	b.waiting, b.active = keep(b.waiting, true), keep(b.active, false)
	// In arrival order: the first waiting request that does not fit the KV
	// budget waits for running ones to end, and so do those behind it (a
	// long prompt is not overtaken forever by short ones). Alone, every
	// request fits: Generate refuses those that cannot.
	for len(b.active) < b.maxBatch && len(b.waiting) > 0 {
		s := b.waiting[0]
		if b.kvBudget > 0 && len(b.active) > 0 && b.kvUsed+s.kv > b.kvBudget {
			break
		}
		b.active = append(b.active, s)
		b.kvUsed += s.kv
		b.waiting = b.waiting[1:]
		b.queued--
	}
	if len(b.active) == 0 {
		b.running = false
		return false
	}
	return true
}

// The prefill budget is the most prompt tokens one turn runs, over all the
// prompts being read, in whole chunks (a prompt is read prefillChunk
// tokens per call whatever the budget, so its numbers do not depend on
// timing). While streams decode, a turn is their inter-token gap: the
// budget is as many chunks as the measured cost per prompt token fits in
// turnTarget, at least one (so prompts advance; one chunk bounds the gap)
// and at most maxPrefillBudget. With no stream decoding it is
// maxPrefillBudget: several prompts' chunks share one read of the weights.
const (
	turnTarget        = 250 * time.Millisecond
	maxPrefillBudget  = 8 * prefillChunk
	unmeasuredPrefill = 2 * prefillChunk // until a turn was measured
	perTokenWeight    = 0.5              // of the newest measurement
)

// prefillBudget is the turn's budget of prompt tokens (see above).
func (b *batcher) prefillBudget(decoding bool) int {
	switch {
	case !decoding:
		return maxPrefillBudget
	case b.perToken <= 0:
		return unmeasuredPrefill
	}
	chunks := int(turnTarget.Seconds() / b.perToken / prefillChunk)
	return min(max(chunks, 1), maxPrefillBudget/prefillChunk) * prefillChunk
}

// step runs one turn: one model call per model, holding the next token of
// every running sequence and, within the prefill budget, the next chunks
// of the prompts still being read, in arrival order (a request's cache is
// created when its first chunk is due).
func (b *batcher) step() {
	if b.now == nil {
		b.now = time.Now
	}
	groups := map[*engine.Model][]*slot{}
	var order []*engine.Model
	decoding := false
	for _, s := range b.active {
		decoding = decoding || (!s.over && s.seq != nil && !s.seq.Prefilling())
	}
	full := b.prefillBudget(decoding)
	budget := full
	for _, s := range b.active {
		if s.over || s.left.Load() || !b.due(s, &budget, full) {
			continue
		}
		if groups[s.m] == nil {
			order = append(order, s.m)
		}
		groups[s.m] = append(groups[s.m], s)
	}
	b.turnFed = full - budget
	start := b.now()
	defer func() {
		if b.turnFed > 0 {
			t := b.now().Sub(start).Seconds() / float64(b.turnFed)
			if b.perToken <= 0 {
				b.perToken = t
			} else {
				b.perToken += perTokenWeight * (t - b.perToken)
			}
		}
	}()
	for _, m := range order {
		g := groups[m]
		seqs := make([]*generate.Sequence, len(g))
		for i, s := range g {
			seqs[i] = s.seq
		}
		ids, ok, err := generate.StepMixed(seqs)
		for i, s := range g {
			switch {
			case err != nil:
				s.finish(err)
			case ok[i]:
				s.push(ids[i])
				if s.seq.Done() {
					s.finish(nil)
				}
			}
		}
	}
}

// due reports whether s runs this turn: a decoding sequence always; one
// reading its prompt when its next chunk fits the budget left (or is the
// turn's first: the budget is still full), which it then takes. It starts
// s's sequence if need be.
func (b *batcher) due(s *slot, budget *int, full int) bool {
	if s.seq == nil {
		if *budget <= 0 {
			return false
		}
		seq, err := generate.NewSequence(s.m, s.prompt, s.p, prefillChunk)
		if err != nil {
			s.finish(err)
			return false
		}
		if s.seq = seq; seq.Done() {
			s.finish(nil)
			return false
		}
	}
	if !s.seq.Prefilling() {
		return true
	}
	n := s.seq.NextFeed()
	if n > *budget && *budget < full {
		return false
	}
	*budget -= n
	return true
}
