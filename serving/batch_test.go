package serving_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"hone/engine"
	"hone/serving"
)

// Greedy requests decoded together in one batch, on two models, with a
// long prompt prefilled in chunks between their steps, give exactly the
// text each gives alone.
func TestConcurrentMatchesAlone(t *testing.T) {
	dirs := writeModels(t, 2)
	type job struct {
		dir string
		req serving.Request
	}
	var jobs []job
	for i, prompt := range []string{"Once upon a time", "Hello", strings.Repeat("the quick brown fox ", 30), "1 2 3", "Why?"} {
		jobs = append(jobs, job{dirs[i%2], serving.Request{Prompt: prompt, MaxTokens: 10 + 7*i, Temperature: ptr(0.0)}})
	}
	jobs = append(jobs, job{dirs[0], serving.Request{Prompt: "Sampled", MaxTokens: 20, Temperature: ptr(0.8), Seed: ptr(uint64(9))}})
	ctx := context.Background()
	alone, err := serving.New(serving.Config{MaxLoaded: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]*serving.Result, len(jobs))
	for i, j := range jobs {
		if want[i], err = alone.Generate(ctx, j.dir, j.req, nil); err != nil {
			t.Fatal(err)
		}
	}
	together, err := serving.New(serving.Config{MaxLoaded: 2, MaxBatch: 4})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]*serving.Result, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() { got[i], errs[i] = together.Generate(ctx, j.dir, j.req, nil) })
	}
	wg.Wait()
	for i := range jobs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got[i].Text != want[i].Text || got[i].CompletionTokens != want[i].CompletionTokens || got[i].FinishReason != want[i].FinishReason {
			t.Errorf("request %d together = %q (%d tokens, %s), alone %q (%d, %s)", i, got[i].Text, got[i].CompletionTokens,
				got[i].FinishReason, want[i].Text, want[i].CompletionTokens, want[i].FinishReason)
		}
	}
}

// Beyond MaxQueue waiting requests, a request is refused with ErrBusy at
// once; when the queue drains, requests are taken again.
func TestQueueBound(t *testing.T) {
	dir := writeModels(t, 1)[0]
	s, err := serving.New(serving.Config{MaxBatch: 1, MaxQueue: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		once := sync.OnceFunc(func() { close(started) })
		s.Generate(ctx, dir, serving.Request{Prompt: "Once upon a time", MaxTokens: 2000, Temperature: ptr(0.0)},
			func(string) error { once(); return nil })
		once()
	})
	<-started
	wg.Go(func() { s.Generate(ctx, dir, serving.Request{Prompt: "Hello", MaxTokens: 5}, nil) })
	for s.Queued() != 1 {
		time.Sleep(time.Millisecond)
	}
	_, err = s.Generate(context.Background(), dir, serving.Request{Prompt: "Hi", MaxTokens: 1}, nil)
	if !errors.Is(err, serving.ErrBusy) || !strings.Contains(err.Error(), "--max-queue") {
		t.Errorf("Generate with a full queue = %v, want ErrBusy naming --max-queue", err)
	}
	cancel()
	wg.Wait()
	if s.Queued() != 0 {
		t.Errorf("%d requests queued after they all ended", s.Queued())
	}
	res, err := s.Generate(context.Background(), dir, serving.Request{Prompt: "Hi", MaxTokens: 1}, nil)
	if err != nil || res.CompletionTokens != 1 {
		t.Errorf("Generate after the queue drained = %+v, %v", res, err)
	}
}

// passDevice records the rows of every model pass (one Embedding call
// each) and can hold the next pass until released.
type passDevice struct {
	engine.Device
	mu         sync.Mutex
	rows       []int
	hold, held chan struct{} // hold non-nil: the next pass waits for it to close, closing held first
}

func (d *passDevice) Embedding(out []float32, ids []int32, table []float32, n, dim int) {
	d.mu.Lock()
	d.rows = append(d.rows, n)
	hold, held := d.hold, d.held
	d.hold = nil
	d.mu.Unlock()
	if hold != nil {
		close(held)
		<-hold
	}
	d.Device.Embedding(out, ids, table, n, dim)
}

func (d *passDevice) passes() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.rows...)
}

// Prompts waiting together are read chunk by chunk in shared model passes,
// and a running stream's next token rides along in every one of them: the
// prompts take fewer passes than they have chunks, and every pass that
// reads prompt tokens holds exactly one more row, the stream's.
func TestPrefillChunksBatched(t *testing.T) {
	dir := writeModels(t, 1)[0]
	cpu, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dev := &passDevice{Device: cpu}
	s, err := serving.New(serving.Config{Load: func(dir string) (*engine.Model, error) { return engine.Load(dir, dev, engine.Options{}) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the running stream
		once := sync.OnceFunc(func() { close(started) })
		s.Generate(ctx, dir, serving.Request{Prompt: "Once upon a time", MaxTokens: 2000, Temperature: ptr(0.0)},
			func(string) error { once(); return nil })
		once()
	})
	<-started
	hold, held := make(chan struct{}), make(chan struct{})
	dev.mu.Lock()
	dev.hold, dev.held = hold, held
	dev.mu.Unlock()
	<-held // the loop is inside a pass: the prompts below queue up meanwhile
	const n = 3
	res := make([]*serving.Result, n)
	errs := make([]error, n)
	var reqs sync.WaitGroup
	for i := range n {
		prompt := strings.Repeat(fmt.Sprintf("the quick brown fox %d ", i), 25)
		reqs.Go(func() { res[i], errs[i] = s.Generate(ctx, dir, serving.Request{Prompt: prompt, MaxTokens: 1}, nil) })
	}
	for s.Queued() != n {
		time.Sleep(time.Millisecond)
	}
	before := len(dev.passes())
	close(hold)
	reqs.Wait()
	chunks, promptTokens := 0, 0
	for i, r := range res {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		chunks += (r.PromptTokens + 63) / 64
		promptTokens += r.PromptTokens
	}
	if chunks < 2*n {
		t.Fatalf("%d chunks for %d prompts: the test needs prompts longer than a chunk", chunks, n)
	}
	var prefill, read int
	for _, rows := range dev.passes()[before:] {
		if rows > 1 {
			prefill++
			read += rows - 1 // one row is the running stream's token
		}
	}
	if prefill >= chunks || read != promptTokens {
		t.Errorf("%d prompt tokens in %d chunks took %d passes reading %d prompt tokens beside the stream; want fewer passes than chunks, each with the stream's token",
			promptTokens, chunks, prefill, read)
	}
	cancel()
	wg.Wait()
}
