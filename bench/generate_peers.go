package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"hone/export"
)

// PeerTools locate the peers' programs.
type PeerTools struct {
	Node            string // node, for llama.cpp
	LlamaCppScript  string // tools/bench/llamacpp_generate.mjs
	LlamaCppModules string // node_modules holding node-llama-cpp 3.21.1 (scripts/test-assets.sh)
	Python          string // a python3 with torch
	TorchScript     string // tools/bench/torch_generate.py
}

// PeerResult is one peer's single-stream greedy decode.
type PeerResult struct {
	Engine     string  `json:"engine"`
	Precision  string  `json:"precision"`
	TokensPerS float64 `json:"tokens_per_s"`
	Ratio      float64 `json:"ratio"` // hone's tokens/s over the peer's: above 1, hone is faster
	Command    string  `json:"command"`
	// BLAS: the PyTorch peer's (its fp32 products'; tools/bench/torch_blas.py).
	BLAS *PeerBLAS `json:"blas,omitempty"`
}

// runPeer decodes NewTokens greedy tokens after prompt in peer name with
// the given threads and the precision of s: llama.cpp on the GGUF that
// hone's exporter writes from the model (bf16 or f32), PyTorch on a model
// of the same config (its weights are random: speed does not depend on
// them).
func runPeer(ctx context.Context, name string, s GenerateSpec, threads int, prompt []int) (*PeerResult, error) {
	t := s.Tools
	var cmd *exec.Cmd
	switch name {
	case "llamacpp":
		tmp, err := os.MkdirTemp("", "hone-bench-gguf-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dtype := map[string]string{"bf16": "bf16", "fp32": "f32"}[s.Precision]
		gguf := filepath.Join(tmp, "model.gguf")
		if s.GGUF != "" {
			gguf = s.GGUF
		} else if err := export.GGUF(ctx, s.Dir, gguf, export.GGUFOptions{DType: dtype}); err != nil {
			return nil, fmt.Errorf("bench generate: llama.cpp peer: export %s: %w", s.Dir, err)
		}
		req, err := json.Marshal(map[string]any{"model": gguf, "prompt": prompt, "new_tokens": s.NewTokens, "threads": threads})
		if err != nil {
			return nil, err
		}
		reqPath := filepath.Join(tmp, "request.json")
		if err := os.WriteFile(reqPath, req, 0o644); err != nil {
			return nil, err
		}
		cmd = exec.CommandContext(ctx, t.Node, t.LlamaCppScript, t.LlamaCppModules, reqPath)
	case "torch":
		cmd = exec.CommandContext(ctx, t.Python, t.TorchScript, "--config", filepath.Join(s.Dir, "config.json"),
			"--prompt-tokens", fmt.Sprint(len(prompt)), "--new-tokens", fmt.Sprint(s.NewTokens),
			"--threads", fmt.Sprint(threads), "--precision", s.Precision)
	default:
		return nil, fmt.Errorf("bench generate: --peer %q: want llamacpp or torch", name)
	}
	cmd.Env = append(os.Environ(), fmt.Sprintf("OMP_NUM_THREADS=%d", threads))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("bench generate: peer %s (%s): %w: %s", name, cmd, err, lastLine(stderr.String()))
	}
	var r PeerResult
	if err := json.Unmarshal([]byte(lastLine(string(out))), &r); err != nil || r.TokensPerS <= 0 {
		return nil, fmt.Errorf("bench generate: peer %s: no tokens_per_s in its last line %q: %v", name, lastLine(string(out)), err)
	}
	if r.Precision == "" {
		r.Precision = s.Precision
		if s.GGUF != "" {
			r.Precision = "gguf " + filepath.Base(s.GGUF)
		}
	}
	r.Command = cmd.String()
	return &r, nil
}
