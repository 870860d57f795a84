package bench

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"hone/internal/testassets"
	"hone/internal/testmodel"
)

// With peers, Generate runs hone, then llama.cpp (node-llama-cpp on hone's
// own GGUF export) and PyTorch on the same single-stream case, and reports
// each peer's tokens/s with hone's ratio to it; several streams with peers
// are refused.
func TestGeneratePeers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.Write(t, dir, testmodel.Llama3Tiny, 1)
	root := testassets.Root(t)
	s := GenerateSpec{Dir: dir, Streams: 1, PromptTokens: 6, NewTokens: 4, Threads: 1, Precision: "bf16", Peers: []string{"llamacpp", "torch"},
		Tools: PeerTools{Node: "node", LlamaCppScript: filepath.Join(root, "tools", "bench", "llamacpp_generate.mjs"),
			LlamaCppModules: testassets.Path(t, "node-llama-cpp/node_modules"),
			Python:          "/usr/bin/python3", TorchScript: filepath.Join(root, "tools", "bench", "torch_generate.py")}}
	res, err := Generate(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if res.Precision != "bf16" || len(res.Peers) != 2 {
		t.Fatalf("precision %q, %d peers; want bf16 and 2", res.Precision, len(res.Peers))
	}
	for i, want := range []string{"llama.cpp", "pytorch"} {
		p := res.Peers[i]
		if len(p.Engine) < len(want) || p.Engine[:len(want)] != want || p.TokensPerS <= 0 ||
			math.Abs(p.Ratio-res.TokensPerS/p.TokensPerS) > 1e-9*p.Ratio {
			t.Errorf("peer %d = %+v, want %s with tokens/s > 0 and ratio hone/peer (hone %.1f)", i, p, want, res.TokensPerS)
		}
	}
	s.Streams = 2
	if _, err := Generate(context.Background(), s); err == nil {
		t.Error("peers with 2 streams: no error")
	}
}
