package testassets

import "testing"

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
	var res LlamaCppCompareResult
	runLlamaCppScript(t, "llamacpp_quant.mjs", req, &res)
	return res
}
