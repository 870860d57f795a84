package train_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/internal/testmodel"
	"hone/train"
)

// A run started before the default context length became the model's
// maximum (its checkpoints fingerprint an unset length, its work dir keeps
// no choice) resumes at the length it trained with, min(maximum, 2048),
// not at today's default (here the model's maximum 4096).
func TestLegacyDefaultContextResumes(t *testing.T) {
	model := t.TempDir()
	testmodel.Write(t, model, strings.Replace(testmodel.Llama3Tiny, `"max_position_embeddings": 2048`, `"max_position_embeddings": 4096`, 1), 1)
	s := spec(model, chatData(t))
	s.ContextLength, s.BatchRows, s.GradAccum, s.Duration, s.CheckpointEvery = 2048, 1, 1, train.Duration{Batches: 4}, 2
	s.EvalData = ""

	// The old run: 2048 tokens a row (its default then), stopped at step 2.
	work := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	first := &recorder{onStep: func(m train.StepMetrics) {
		if m.Step == 2 {
			cancel()
		}
	}}
	if _, err := train.Run(ctx, s, work, first); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v, want context.Canceled", err)
	}
	s.ContextLength = 0
	legacy, err := train.LegacyFingerprint(s)
	if err != nil {
		t.Fatal(err)
	}
	states, _ := filepath.Glob(filepath.Join(work, "checkpoints", "*", "state.json"))
	if len(states) == 0 {
		t.Fatal("the first run left no checkpoint")
	}
	for _, f := range states {
		var st map[string]any
		b, err := os.ReadFile(f)
		if err != nil || json.Unmarshal(b, &st) != nil {
			t.Fatalf("%s: %v", f, err)
		}
		st["spec_fingerprint"] = legacy
		b, _ = json.Marshal(st)
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(work, "context_length.json"))

	rec := &logRecorder{}
	if _, err := train.Run(context.Background(), s, work, rec); err != nil {
		t.Fatalf("resuming the old run: %v", err)
	}
	if len(rec.steps) != 2 || rec.steps[0].Step != 3 {
		t.Errorf("resumed run did steps %+v, want 3 and 4", rec.steps)
	}
	joined := strings.Join(rec.logs, "\n")
	if !strings.Contains(joined, "context length 2048: as when the run started") {
		t.Errorf("the run's log does not say it kept 2048 tokens:\n%s", joined)
	}
	b, err := os.ReadFile(filepath.Join(work, "context_length.json"))
	if err != nil || !strings.Contains(string(b), `"context_length":2048`) {
		t.Errorf("context_length.json = %s, %v; want the length kept", b, err)
	}
}
