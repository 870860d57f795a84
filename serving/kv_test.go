package serving_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hone/engine"
	"hone/serving"
)

// With a KV cache budget (hone serve --kv-memory), a request whose prompt
// and max_tokens cannot fit even alone is refused as invalid naming the
// numbers, a prompt that cannot fit names the prompt, and an unset
// max_tokens shrinks to the room the budget leaves.
func TestKVBudgetRefuses(t *testing.T) {
	dir := writeModels(t, 1)[0]
	c, err := engine.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	const fit = 40
	s, err := serving.New(serving.Config{KVMemory: c.KVCacheBytes(fit)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = s.Generate(ctx, dir, serving.Request{Prompt: "Hello", MaxTokens: 100}, nil)
	if !errors.Is(err, serving.ErrInvalid) || serving.InvalidParam(err) != "max_tokens" {
		t.Fatalf("prompt + 100 tokens in a budget of %d = %v, want an invalid max_tokens", fit, err)
	}
	for _, want := range []string{"max_tokens 100", "holds 40", "--kv-memory"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %q", err, want)
		}
	}
	_, err = s.Generate(ctx, dir, serving.Request{Prompt: strings.Repeat("word ", 60), MaxTokens: 1}, nil)
	if !errors.Is(err, serving.ErrInvalid) || serving.InvalidParam(err) != "prompt" || !strings.Contains(err.Error(), "holds 40 tokens") {
		t.Errorf("a 61-token prompt in a budget of %d = %v, want an invalid prompt naming the budget", fit, err)
	}
	res, err := s.Generate(ctx, dir, serving.Request{Prompt: "Hello", Temperature: ptr(0.0)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.PromptTokens+res.CompletionTokens > fit {
		t.Errorf("default max_tokens: %d prompt + %d completion tokens, over the budget of %d", res.PromptTokens, res.CompletionTokens, fit)
	}
}

// A request that fits the KV budget alone but not beside the running
// generations waits (it is not admitted while they run) and runs once
// they end; without a budget it joins the batch at once.
func TestKVBudgetWaits(t *testing.T) {
	dir := writeModels(t, 1)[0]
	c, err := engine.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, budget := range []int64{c.KVCacheBytes(300), 0} {
		s, err := serving.New(serving.Config{KVMemory: budget})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var pieces atomic.Int64
		started := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { // about 255 tokens of cache
			once := sync.OnceFunc(func() { close(started) })
			s.Generate(ctx, dir, serving.Request{Prompt: "Once upon a time", MaxTokens: 250, Temperature: ptr(0.0)},
				func(string) error { once(); pieces.Add(1); return nil })
			once()
		})
		<-started
		var second *serving.Result
		var secondErr error
		var secondRan atomic.Bool
		wg.Go(func() { // 102 more: over a budget of 300
			second, secondErr = s.Generate(context.Background(), dir, serving.Request{Prompt: "Hello", MaxTokens: 100, Temperature: ptr(0.0)},
				func(string) error { secondRan.Store(true); return nil })
			secondRan.Store(true)
		})
		for s.Queued() != 1 && !secondRan.Load() {
			time.Sleep(time.Millisecond)
		}
		from := pieces.Load()
		for pieces.Load() < from+10 {
			time.Sleep(time.Millisecond)
		}
		waiting := s.Queued()
		cancel()
		wg.Wait()
		if secondErr != nil || second == nil || second.CompletionTokens == 0 {
			t.Fatalf("budget %d: the second request = %+v, %v; want it run", budget, second, secondErr)
		}
		if want := map[bool]int{true: 1, false: 0}[budget > 0]; waiting != want {
			t.Errorf("budget %d: %d requests waiting while the first ran 10 more tokens, want %d", budget, waiting, want)
		}
	}
}
