package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// `hone bench generate --json` decodes every stream's tokens and prints,
// last line, the aggregate tokens/s with the stream count; a budget past
// the context window is refused naming it.
func TestBenchGenerate(t *testing.T) {
	dir := filepath.Join("..", "..", "engine", "testdata", "parity", "tied_llama3")
	run := func(args ...string) (string, error) {
		cmd := benchCmd()
		var stdout, stderr bytes.Buffer
		cmd.SetOut(&stdout)
		cmd.SetErr(&stderr)
		cmd.SetArgs(append([]string{"generate", "--model", dir}, args...))
		err := cmd.Execute()
		return stdout.String(), err
	}
	out, err := run("--new-tokens", "5", "--streams", "3", "--prompt-tokens", "4", "--json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var res struct {
		TokensPerS float64 `json:"tokens_per_s"`
		Streams    int     `json:"streams"`
		NewTokens  int     `json:"new_tokens"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil || res.TokensPerS <= 0 || res.Streams != 3 || res.NewTokens != 5 {
		t.Errorf("last line %q (%v), want tokens_per_s > 0, streams 3, new_tokens 5", lines[len(lines)-1], err)
	}
	if _, err := run("--new-tokens", "600", "--streams", "1"); err == nil || !strings.Contains(err.Error(), "context window 512") {
		t.Errorf("bench generate past the context window = %v, want an error naming it", err)
	}
}

// `hone bench generate --precision nf4` decodes on an NF4 base (QLoRA's)
// and reports the weights it holds, fewer than the fp32 model's.
func TestBenchGenerateNF4(t *testing.T) {
	dir := filepath.Join("..", "..", "engine", "testdata", "parity", "tied_llama3")
	var weights [2]int64
	for i, p := range []string{"fp32", "nf4"} {
		cmd := benchCmd()
		var stdout bytes.Buffer
		cmd.SetOut(&stdout)
		cmd.SetArgs([]string{"generate", "--model", dir, "--new-tokens", "3", "--prompt-tokens", "20", "--precision", p, "--json"})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("--precision %s: %v", p, err)
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		var res struct {
			TokensPerS  float64 `json:"tokens_per_s"`
			Precision   string  `json:"precision"`
			WeightBytes int64   `json:"weight_bytes"`
		}
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil || res.TokensPerS <= 0 || res.Precision != p || res.WeightBytes <= 0 {
			t.Fatalf("--precision %s: last line %q (%v)", p, lines[len(lines)-1], err)
		}
		weights[i] = res.WeightBytes
	}
	if weights[1] >= weights[0] {
		t.Errorf("weight_bytes: nf4 %d, fp32 %d", weights[1], weights[0])
	}
}
