package serving_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"hone/chattemplate"
	"hone/engine"
	"hone/engine/cpu"
	"hone/generate"
	"hone/internal/testmodel"
	"hone/serving"
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
	m, err := engine.Load(dir, cpu.New(0), engine.Options{})
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
