package bench

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"hone/internal/testassets"
	"hone/internal/testmodel"
)

// With a peer, Generate runs hone, then llama.cpp (node-llama-cpp on hone's
// own GGUF export) on the same single-stream case, and reports the peer's
// tokens/s with hone's ratio to it; several streams with peers are
// refused. (The PyTorch peer needs python3-torch, which the project's
// scripts do not install, so it is not run here.)
func TestGeneratePeers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.Write(t, dir, testmodel.Llama3Tiny, 1)
	root := testassets.Root(t)
	s := GenerateSpec{Dir: dir, Streams: 1, PromptTokens: 6, NewTokens: 4, Threads: 1, Precision: "bf16", Peers: []string{"llamacpp"},
		Tools: PeerTools{Node: "node", LlamaCppScript: filepath.Join(root, "tools", "bench", "llamacpp_generate.mjs"),
			LlamaCppModules: testassets.Path(t, "node-llama-cpp/node_modules")}}
	res, err := Generate(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if res.Precision != "bf16" || len(res.Peers) != 1 {
		t.Fatalf("precision %q, %d peers; want bf16 and 1", res.Precision, len(res.Peers))
	}
	for i, want := range []string{"llama.cpp"} {
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
