package serving_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hone/chattemplate"
	"hone/engine"
	"hone/engine/cpu"
	"hone/generate"
	"hone/internal/testmodel"
	"hone/serving"
	"hone/tokenizer"
)

func ptr[T any](v T) *T { return &v }

// The text of a greedy chat completion is what hone generate (Prompter)
// produces for the same model and prompt, the prompt is counted as the
// Prompter encodes it, and the streamed pieces add up to the text.
func TestGenerateMatchesPrompter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a")
	testmodel.Write(t, dir, testmodel.Llama3Tiny, 1)
	ctx := context.Background()
	// The reference runs first: a CPU device created after the service's
	// would reset the oneDNN engine its matmul primitives were built on.
	pr, err := generate.NewPrompter(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pr.Encode("What is 12 + 30?")
	if err != nil {
		t.Fatal(err)
	}
	// The model as the service loads it: bf16 weights decoded as bf16
	// (a frozen bf16 base), the same kernels.
	opt, err := serving.LoadOptions(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !opt.FrozenBF16 {
		t.Fatalf("LoadOptions of a bf16 checkpoint = %+v, want a frozen bf16 base", opt)
	}
	m, err := engine.Load(dir, cpu.New(0), opt)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pr.Complete(ctx, m, "What is 12 + 30?", generate.Params{MaxNewTokens: 12})
	if err != nil {
		t.Fatal(err)
	}
	s, err := serving.New(serving.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var pieces []string
	req := serving.Request{Messages: []chattemplate.Message{{Role: "user", Content: "What is 12 + 30?"}}, MaxTokens: 12, Temperature: ptr(0.0)}
	res, err := s.Generate(ctx, dir, req, func(p string) error { pieces = append(pieces, p); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != want || res.PromptTokens != len(ids) {
		t.Errorf("Generate = %q with %d prompt tokens, want %q with %d (as Prompter)", res.Text, res.PromptTokens, want, len(ids))
	}
	if strings.Join(pieces, "") != res.Text {
		t.Errorf("streamed pieces %q do not add up to %q", pieces, res.Text)
	}
	if res.FinishReason == serving.FinishLength && res.CompletionTokens != 12 {
		t.Errorf("finish length after %d tokens, want 12", res.CompletionTokens)
	}

	// A stop string cuts the text before it and finishes with "stop"; a
	// random model's sampled text varies more than its greedy text.
	req.Temperature, req.Seed = ptr(1.0), ptr(uint64(5))
	full, err := s.Generate(ctx, dir, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	runes := []rune(full.Text)
	if len(runes) < 6 {
		t.Fatalf("sampled text %q too short to pick a stop string from", full.Text)
	}
	stop := string(runes[len(runes)/2 : len(runes)/2+2])
	pieces = nil
	req.Stop = []string{stop}
	cut, err := s.Generate(ctx, dir, req, func(p string) error { pieces = append(pieces, p); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if wantText := full.Text[:strings.Index(full.Text, stop)]; cut.Text != wantText || cut.FinishReason != serving.FinishStop || wantText == "" {
		t.Errorf("Generate(stop %q) = %q, %s; want %q (not empty), stop", stop, cut.Text, cut.FinishReason, wantText)
	}
	if joined := strings.Join(pieces, ""); joined != cut.Text {
		t.Errorf("streamed pieces %q with a stop string, want %q", joined, cut.Text)
	}
}

// One model stays loaded by default; concurrent requests on one model take
// turns and agree; bad requests are ErrInvalid.
func TestCacheAndRequests(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	testmodel.Write(t, a, testmodel.Llama3Tiny, 1)
	testmodel.Write(t, b, testmodel.Llama3Tiny, 2)
	// b without a chat template: a base model.
	cfgPath := filepath.Join(b, "tokenizer_config.json")
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var tc map[string]any
	if err := json.Unmarshal(raw, &tc); err != nil {
		t.Fatal(err)
	}
	delete(tc, "chat_template")
	if raw, err = json.Marshal(tc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := serving.New(serving.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := serving.Request{Prompt: "Once upon a time", MaxTokens: 5, Temperature: ptr(0.7), Seed: ptr(uint64(3))}
	var wg sync.WaitGroup
	texts := make([]string, 3)
	errs := make([]error, 3)
	for i := range texts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Generate(ctx, a, req, nil)
			if err == nil {
				texts[i] = res.Text
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if texts[0] != texts[1] || texts[1] != texts[2] {
		t.Errorf("concurrent requests with one seed disagree: %q", texts)
	}
	if got := s.Loaded(); !slices.Equal(got, []string{a}) {
		t.Errorf("Loaded() = %v, want [%s]", got, a)
	}
	if _, err := s.Generate(ctx, b, req, nil); err != nil {
		t.Fatal(err)
	}
	if got := s.Loaded(); !slices.Equal(got, []string{b}) {
		t.Errorf("Loaded() after using b = %v, want only b (MaxLoaded 1)", got)
	}
	for _, tc := range []struct {
		name string
		dir  string
		req  serving.Request
		want string
	}{
		{"no template", b, serving.Request{Messages: []chattemplate.Message{{Role: "user", Content: "hi"}}}, "no chat template"},
		{"both", a, serving.Request{Prompt: "x", Messages: []chattemplate.Message{{Role: "user", Content: "hi"}}}, "not both"},
		{"neither", a, serving.Request{}, "messages or a prompt"},
		{"temperature", a, serving.Request{Prompt: "x", Temperature: ptr(3.0)}, "temperature"},
		{"stops", a, serving.Request{Prompt: "x", Stop: []string{"a", "b", "c", "d", "e"}}, "stop strings"},
		{"too long", a, serving.Request{Messages: []chattemplate.Message{{Role: "user", Content: strings.Repeat("long ", 3000)}}}, "context window"},
	} {
		_, err := s.Generate(ctx, tc.dir, tc.req, nil)
		if !errors.Is(err, serving.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Generate(%s) = %v, want ErrInvalid containing %q", tc.name, err, tc.want)
		}
	}
}

// writeModels writes n tiny models under a temporary root.
func writeModels(t *testing.T, n int) []string {
	t.Helper()
	root := t.TempDir()
	var dirs []string
	for i := range n {
		dir := filepath.Join(root, string(rune('a'+i)))
		testmodel.Write(t, dir, testmodel.Llama3Tiny, uint64(i+1))
		dirs = append(dirs, dir)
	}
	return dirs
}

// liveCounter counts models between Load and Unload and keeps the peak.
type liveCounter struct {
	mu         sync.Mutex
	live, peak int
	loads      []string
	dev        engine.Device
}

func (c *liveCounter) load(dir string) (*engine.Model, error) {
	c.mu.Lock()
	c.live++
	c.peak = max(c.peak, c.live)
	c.loads = append(c.loads, dir)
	c.mu.Unlock()
	return engine.Load(dir, c.dev, engine.Options{})
}

func (c *liveCounter) unload(string, *engine.Model) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live--
}

func (c *liveCounter) state() (peak int, loads []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peak, slices.Clone(c.loads)
}

// MaxLoaded bounds the models in memory even when the model to evict is
// still in use (the new load waits until its request ends) and when
// concurrent requests ask for more versions than fit.
func TestMaxLoadedUnderConcurrency(t *testing.T) {
	dirs := writeModels(t, 3)
	dev := cpu.New(0)
	ctx := context.Background()
	req := serving.Request{Prompt: "Once upon a time", MaxTokens: 3, Temperature: ptr(0.0)}

	// A request on a holds its model (blocked in onText) while a request
	// for b arrives: with room for one, b must not load until a's ends.
	c := &liveCounter{dev: dev}
	s, err := serving.New(serving.Config{MaxLoaded: 1, Load: c.load, Unload: c.unload})
	if err != nil {
		t.Fatal(err)
	}
	holding, release := make(chan struct{}), make(chan struct{})
	errs := make(chan error, 2)
	go func() {
		once := sync.OnceFunc(func() { close(holding) })
		_, err := s.Generate(ctx, dirs[0], req, func(string) error { once(); <-release; return nil })
		once()
		errs <- err
	}()
	<-holding
	go func() { _, err := s.Generate(ctx, dirs[1], req, nil); errs <- err }()
	// Wait until b's request has made its move: a taken out of the cache
	// (to be freed when its request ends) or, wrongly, b loaded.
	for {
		_, loads := c.state()
		if !slices.Contains(s.Loaded(), dirs[0]) || slices.Contains(loads, dirs[1]) {
			break
		}
		runtime.Gosched()
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if peak, loads := c.state(); peak > 1 {
		t.Fatalf("%d models in memory at once (loads %v), want at most MaxLoaded 1", peak, loads)
	}

	// Many concurrent requests over three versions, room for two.
	c = &liveCounter{dev: dev}
	if s, err = serving.New(serving.Config{MaxLoaded: 2, Load: c.load, Unload: c.unload}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	fails := make(chan error, 12)
	for i := range 12 {
		wg.Go(func() {
			if _, err := s.Generate(ctx, dirs[i%3], req, nil); err != nil {
				fails <- err
			}
		})
	}
	wg.Wait()
	close(fails)
	for err := range fails {
		t.Fatal(err)
	}
	if peak, loads := c.state(); peak > 2 || len(loads) < 3 {
		t.Fatalf("%d models in memory at once over %d loads, want at most MaxLoaded 2", peak, len(loads))
	}
}

// A short request completes while a long generation is still going: the
// device is handed over between model calls, not between requests.
func TestRequestsInterleave(t *testing.T) {
	dir := writeModels(t, 1)[0]
	s, err := serving.New(serving.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	started, longDone := make(chan struct{}), make(chan struct{})
	var long *serving.Result
	var longErr error
	go func() {
		defer close(longDone)
		once := sync.OnceFunc(func() { close(started) })
		long, longErr = s.Generate(ctx, dir, serving.Request{Prompt: "Once upon a time", MaxTokens: 2000, Temperature: ptr(0.0)},
			func(string) error { once(); return nil })
		once()
	}()
	<-started
	short, err := s.Generate(ctx, dir, serving.Request{Prompt: "Hello", MaxTokens: 1, Temperature: ptr(0.0)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-longDone:
		t.Errorf("the 1-token request (%d tokens) finished only after the long generation", short.CompletionTokens)
	default:
	}
	<-longDone
	if longErr != nil {
		t.Fatal(longErr)
	}
	if long.CompletionTokens < 100 {
		t.Fatalf("the long generation made %d tokens (%s); the test needs a long one", long.CompletionTokens, long.FinishReason)
	}
}

// The request deadline ends a generation with the text so far (finish
// "length", TimedOut), and a request whose deadline passes before its
// model is ready fails with context.DeadlineExceeded.
func TestRequestDeadline(t *testing.T) {
	dirs := writeModels(t, 2)
	var late atomic.Bool
	clock := func() time.Time {
		if late.Load() {
			return time.Now().Add(time.Hour)
		}
		return time.Now()
	}
	s, err := serving.New(serving.Config{RequestTimeout: time.Minute, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	req := serving.Request{Prompt: "Once upon a time", MaxTokens: 500, Temperature: ptr(0.0)}
	var pieces []string
	res, err := s.Generate(ctx, dirs[0], req, func(p string) error { pieces = append(pieces, p); late.Store(true); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || res.FinishReason != serving.FinishLength || res.CompletionTokens >= 500 || res.Text != strings.Join(pieces, "") {
		t.Errorf("Generate past its deadline = %+v (pieces %q), want timed out, finish length, fewer than 500 tokens, the text streamed", res, pieces)
	}

	tiny, err := serving.New(serving.Config{RequestTimeout: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tiny.Generate(ctx, dirs[1], req, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "--request-timeout") {
		t.Errorf("Generate with a 1ns deadline = %v, want context.DeadlineExceeded naming --request-timeout", err)
	}
}

// max_tokens must leave the prompt room in the context window; without
// max_tokens the default is cut to the room left. Stop strings are
// bounded in number and length. Each refusal names its field.
func TestGenerationLimits(t *testing.T) {
	dir := writeModels(t, 1)[0]
	s, err := serving.New(serving.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prompt := strings.Repeat(" a", 2030)
	room := 2048 - len(tok.Encode(prompt, true))
	if room < 2 || room > 40 {
		t.Fatalf("the prompt leaves %d tokens of the 2048 context; pick a prompt that leaves a few", room)
	}
	res, err := s.Generate(ctx, dir, serving.Request{Prompt: prompt, Temperature: ptr(0.0)}, nil)
	if err != nil || res.CompletionTokens > room || (res.FinishReason == serving.FinishLength && res.CompletionTokens != room) {
		t.Errorf("Generate without max_tokens = %+v, %v; want at most the %d tokens left", res, err, room)
	}
	if _, err := s.Generate(ctx, dir, serving.Request{Prompt: prompt, MaxTokens: room, Temperature: ptr(0.0)}, nil); err != nil {
		t.Errorf("Generate(max_tokens %d, the room left) = %v", room, err)
	}
	for _, tc := range []struct {
		name  string
		req   serving.Request
		param string
		want  string
	}{
		{"max_tokens", serving.Request{Prompt: prompt, MaxTokens: room + 1}, "max_tokens", fmt.Sprintf("at most %d tokens", room)},
		{"max_tokens chat", serving.Request{Messages: []chattemplate.Message{{Role: "user", Content: "hi"}}, MaxTokens: 5000}, "max_tokens", "2048"},
		{"stops", serving.Request{Prompt: "x", Stop: []string{"a", "b", "c", "d", "e"}}, "stop", "at most 4"},
		{"stop length", serving.Request{Prompt: "x", Stop: []string{"a", strings.Repeat("s", 257)}}, "stop", "stop[1] is 257 bytes"},
	} {
		_, err := s.Generate(ctx, dir, tc.req, nil)
		if !errors.Is(err, serving.ErrInvalid) || serving.InvalidParam(err) != tc.param || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Generate(%s) = %v (param %q), want ErrInvalid naming %s containing %q", tc.name, err, serving.InvalidParam(err), tc.param, tc.want)
		}
	}
}
