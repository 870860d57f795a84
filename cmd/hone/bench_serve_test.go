package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// `hone bench generate --prompt-tokens N --background-streams 2` submits the
// prompt to the serving scheduler while two streams decode and reports the
// prompt's prefill rate and the streams' gaps meanwhile, ordered p50 ≤ p99
// ≤ max, at least one a turn of the prompt's chunks.
func TestBenchGenerateBackgroundStreams(t *testing.T) {
	cmd := benchCmd()
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetArgs([]string{"generate", "--model", "../../engine/testdata/parity/tied_llama3", "--prompt-tokens", "300",
		"--background-streams", "2", "--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res struct {
		PromptTokens int     `json:"prompt_tokens"`
		Background   int     `json:"background_streams"`
		PrefillS     float64 `json:"prefill_seconds"`
		PrefillTokS  float64 `json:"prefill_tokens_per_s"`
		Gaps         int     `json:"gaps"`
		P50          float64 `json:"gap_p50_seconds"`
		P99          float64 `json:"gap_p99_seconds"`
		Max          float64 `json:"gap_max_seconds"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatal(err)
	}
	// 300 tokens are 5 chunks of 64: each background stream has a token
	// at least per chunk read.
	if res.PromptTokens != 300 || res.Background != 2 || res.PrefillS <= 0 || res.PrefillTokS != 300/res.PrefillS ||
		res.Gaps < 2*5 || !(0 < res.P50 && res.P50 <= res.P99 && res.P99 <= res.Max) {
		t.Errorf("last line %q: want the prompt's prefill rate and ordered gaps of both streams, a gap per chunk at least", lines[len(lines)-1])
	}
}
