package bench

import (
	"os"
	"testing"

	"hone/engine"
)

// TestFLOPsPerTokenCountsProducts counts the 125M bench config's products
// by hand, layer by layer: an untied input embedding is a lookup and adds
// nothing; tying it makes the head's matrix the embedding's, counted once.
func TestFLOPsPerTokenCountsProducts(t *testing.T) {
	raw, err := os.ReadFile("configs/llama-125m.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := engine.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	const (
		d, f, v, layers, heads, kv, seq = 768, 2048, 32000, 12, 12, 4, 256
		hd                              = d / heads
	)
	perLayer := d*d + 2*d*kv*hd + d*d + 3*d*f          // q, k and v (GQA), o, gate, up, down
	norms := (2*layers + 1) * d                        // RMSNorm weights: elementwise, but ActiveParams counts them (0.02%)
	products := float64(layers*perLayer + v*d + norms) // the layers and the output head
	attn := float64(layers) * 2 * 2 * seq / 2 * d      // QKᵀ and PV over half of T (causal), forward
	want := 3 * (2*products + attn)                    // forward, and backward's two products per forward one
	if got := FLOPsPerToken(c, seq); got != want {
		t.Errorf("untied: %.0f FLOPs a token, want %.0f", got, want)
	}
	c.TieWordEmbeddings = true
	if got := FLOPsPerToken(c, seq); got != want {
		t.Errorf("tied: %.0f FLOPs a token, want %.0f (the head's matrix is the embedding's)", got, want)
	}
}
