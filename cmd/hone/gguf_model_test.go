package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/internal/testmodel"
)

// hone generate --model FILE.gguf decodes the weights of a GGUF file hone
// exported, with the tokenizer and template it carries: an f32 export
// completes exactly as its source directory does (f32 holds the source's
// bf16 weights exactly, so this checks names, the Q/K row order and the
// carried files), a q8_0 one loads too.
func TestGenerateGGUF(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.Write(t, dir, testmodel.Llama3Tiny, 6)
	run := func(model string) generateOutput {
		t.Helper()
		out, err := execute(t, generateCmd, "--model", model, "--prompt", "Tell me a story", "--max-new-tokens", "8", "--json")
		if err != nil {
			t.Fatalf("generate --model %s: %v", model, err)
		}
		var o generateOutput
		if err := json.Unmarshal([]byte(out), &o); err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		return o
	}
	want := run(dir)
	for _, dt := range []string{"f32", "q8_0"} {
		file := filepath.Join(t.TempDir(), "m-"+dt+".gguf")
		if _, err := execute(t, exportCmd, "--model", dir, "--out", file, "--dtype", dt); err != nil {
			t.Fatal(err)
		}
		got := run(file)
		if !slices.Equal(got.PromptTokenIDs, want.PromptTokenIDs) {
			t.Errorf("%s: prompt ids %v, source directory %v", dt, got.PromptTokenIDs, want.PromptTokenIDs)
		}
		if dt == "f32" && !slices.Equal(got.TokenIDs, want.TokenIDs) {
			t.Errorf("f32 GGUF completes %v, its source %v", got.TokenIDs, want.TokenIDs)
		}
		if len(got.TokenIDs) == 0 {
			t.Errorf("%s: no tokens", dt)
		}
	}
	_, err := execute(t, generateCmd, "--model", filepath.Join(t.TempDir(), "absent.gguf"), "--prompt", "x")
	if err == nil || !strings.Contains(err.Error(), "absent.gguf") {
		t.Errorf("absent file: err = %v", err)
	}
}
