package serving

import (
	"errors"
	"sync"
	"sync/atomic"

	"hone/engine"
	"hone/generate"
)

// ErrBusy refuses a request because Config.MaxQueue requests already wait
// for a place in the running batch; the client should retry later.
var ErrBusy = errors.New("serving: too many requests waiting")

// batcher runs every generation on the service's one device in a single
// loop (continuous batching): each turn runs one chunk of one prompt, then
// one decode step for every running sequence of each model together, so a
// long prompt delays running streams by one chunk at most. Requests join
// and leave the running batch between turns; beyond maxBatch running
// sequences they wait, and beyond maxQueue waiting they are refused.
type batcher struct {
	maxBatch, maxQueue int

	mu       sync.Mutex
	incoming []*slot // submitted since the loop last looked
	queued   int     // submitted but not yet running
	running  bool    // the loop goroutine is alive

	// owned by the loop goroutine
	waiting, active []*slot
}

// slot is one generation in the batcher. The loop produces its tokens
// ahead of the request, which reads them at its own pace: a slow reader
// delays only itself.
type slot struct {
	m      *engine.Model
	prompt []int
	p      generate.Params
	seq    *generate.Sequence // owned by the loop
	over   bool               // finished; owned by the loop

	mu    sync.Mutex
	toks  []int
	err   error
	ended bool // no more tokens will come
	wake  chan struct{}
	left  atomic.Bool   // the request reads no more
	freed chan struct{} // closed once the loop released the slot's cache
}

// submit queues a generation; ErrBusy when the queue is full.
func (b *batcher) submit(m *engine.Model, prompt []int, p generate.Params) (*slot, error) {
	s := &slot{m: m, prompt: prompt, p: p, wake: make(chan struct{}, 1), freed: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.queued >= b.maxQueue {
		return nil, ErrBusy
	}
	b.queued++
	b.incoming = append(b.incoming, s)
	if !b.running {
		b.running = true
		go b.loop()
	}
	return s, nil
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
		b.prefill()
		b.decode()
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
			case s.left.Load():
				if queued {
					b.queued--
				}
				s.finish(nil)
			default:
				out = append(out, s)
			}
		}
		return out
	}
	b.waiting, b.active = keep(b.waiting, true), keep(b.active, false)
	for len(b.active) < b.maxBatch && len(b.waiting) > 0 {
		b.active = append(b.active, b.waiting[0])
		b.waiting = b.waiting[1:]
		b.queued--
	}
	if len(b.active) == 0 {
		b.running = false
		return false
	}
	return true
}

// prefill runs one chunk of the first prompt not yet all in.
func (b *batcher) prefill() {
	for _, s := range b.active {
		if s.over || s.seq != nil && !s.seq.Prefilling() {
			continue
		}
		if s.seq == nil { // the cache lives on the device: created in a turn too
			seq, err := generate.NewSequence(s.m, s.prompt, s.p, prefillChunk)
			if err != nil {
				s.finish(err)
				return
			}
			if s.seq = seq; seq.Done() {
				s.finish(nil)
				return
			}
		}
		id, ok, err := s.seq.Step()
		switch {
		case err != nil:
			s.finish(err)
		case ok:
			s.push(id)
			if s.seq.Done() {
				s.finish(nil)
			}
		}
		return
	}
}

// decode runs one step for the running sequences, one batch per model.
func (b *batcher) decode() {
	groups := map[*engine.Model][]*slot{}
	var order []*engine.Model
	for _, s := range b.active {
		if s.over || s.seq == nil || s.seq.Prefilling() || s.left.Load() {
			continue
		}
		if groups[s.m] == nil {
			order = append(order, s.m)
		}
		groups[s.m] = append(groups[s.m], s)
	}
	for _, m := range order {
		g := groups[m]
		seqs := make([]*generate.Sequence, len(g))
		for i, s := range g {
			seqs[i] = s.seq
		}
		ids, err := generate.StepBatch(seqs)
		for i, s := range g {
			switch {
			case err != nil:
				s.finish(err)
			default:
				s.push(ids[i])
				if s.seq.Done() {
					s.finish(nil)
				}
			}
		}
	}
}
