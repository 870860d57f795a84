package testassets

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// LlamaCppCompareRequest asks llama.cpp to decode prompts greedily with
// each of Models (an F32 KV cache, so only the weights and llama.cpp's
// own arithmetic differ) and to measure, over the positions of Text, how
// far each model's next-token distribution is from Models[0]'s.
type LlamaCppCompareRequest struct {
	Models    []string `json:"models"`
	Prompts   [][]int  `json:"prompts,omitempty"`
	MaxTokens int      `json:"max_tokens"`
	Text      []int    `json:"text,omitempty"`
	Lora      string   `json:"lora,omitempty"` // a GGUF LoRA adapter applied to every model
}

// LlamaCppKL is the divergence of a model's next-token distributions from
// the first model's: the mean and largest KL(first || model) in nats, and
// the fraction of positions whose most likely token is the same.
type LlamaCppKL struct {
	Mean      float64 `json:"mean"`
	Max       float64 `json:"max"`
	Top1Agree float64 `json:"top1_agree"`
	Positions int     `json:"positions"`
}

// LlamaCppCompareResult holds, per model, the continuations of each prompt
// (an end token included when sampled) and its KL from the first model.
type LlamaCppCompareResult struct {
	Continuations [][][]int    `json:"continuations"`
	KL            []LlamaCppKL `json:"kl"`
}

// LlamaCppCompare runs req in llama.cpp (node-llama-cpp, as LlamaCpp).
func LlamaCppCompare(t testing.TB, req LlamaCppCompareRequest) LlamaCppCompareResult {
	t.Helper()
	modules := Path(t, "node-llama-cpp/node_modules")
	script := filepath.Join(Root(t), "internal", "testassets", "llamacpp_quant.mjs")
	reqPath := filepath.Join(t.TempDir(), "compare.json")
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(reqPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", script, modules, reqPath)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("llama.cpp (node-llama-cpp): %v: %s", err, out)
	}
	var res LlamaCppCompareResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("llama.cpp output %q: %v", out, err)
	}
	return res
}
