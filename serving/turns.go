package serving

import (
	"context"
	"sync"
)

// turns hands the device to one holder at a time, in the order they asked
// (a sync.Mutex is not first-come first-served). A generation holds it for
// one model call and then queues again behind the others, so requests
// interleave step by step instead of waiting for whole generations.
type turns struct {
	mu      sync.Mutex
	busy    bool
	waiting []chan struct{} // closed when the turn passes to its owner
}

// acquire waits for the device; an error means ctx ended first and the
// device is not held.
func (t *turns) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	if !t.busy {
		t.busy = true
		t.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	t.waiting = append(t.waiting, ch)
	t.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, w := range t.waiting {
		if w == ch {
			t.waiting = append(t.waiting[:i], t.waiting[i+1:]...)
			return ctx.Err()
		}
	}
	// The turn was handed over as ctx ended: pass it on.
	t.handOff()
	return ctx.Err()
}

// release passes the device to the longest waiter, if any.
func (t *turns) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.handOff()
}

func (t *turns) handOff() {
	if len(t.waiting) == 0 {
		t.busy = false
		return
	}
	close(t.waiting[0])
	t.waiting = t.waiting[1:]
}
