package serving_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

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
