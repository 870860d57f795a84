package testassets

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// LlamaCppRequest asks llama.cpp to tokenize texts and greedily continue
// prompts with the GGUF file Model.
type LlamaCppRequest struct {
	Model     string   `json:"model"`
	Texts     []string `json:"texts,omitempty"`
	Prompts   [][]int  `json:"prompts,omitempty"`
	MaxTokens int      `json:"max_tokens"`
}

// LlamaCppResult holds llama.cpp's token ids of each text (BOS added when
// the model's metadata says so) and its greedy continuation of each prompt.
type LlamaCppResult struct {
	Tokens        [][]int `json:"tokens"`
	Continuations [][]int `json:"continuations"`
}

// LlamaCpp runs req in llama.cpp: the prebuilt binaries of the
// node-llama-cpp package that scripts/test-assets.sh fetches, under node.
func LlamaCpp(t testing.TB, req LlamaCppRequest) LlamaCppResult {
	t.Helper()
	var res LlamaCppResult
	runLlamaCppScript(t, "llamacpp.mjs", req, &res)
	return res
}

// runLlamaCppScript runs internal/testassets/script under node with
// node-llama-cpp's modules and req as a JSON file, and decodes its
// standard output into res.
func runLlamaCppScript(t testing.TB, script string, req, res any) {
	t.Helper()
	modules := Path(t, "node-llama-cpp/node_modules")
	reqPath := filepath.Join(t.TempDir(), "request.json")
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(reqPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", filepath.Join(Root(t), "internal", "testassets", script), modules, reqPath)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("llama.cpp (node-llama-cpp): %v: %s", err, out)
	}
	if err := json.Unmarshal(out, res); err != nil {
		t.Fatalf("llama.cpp output %q: %v", out, err)
	}
}
