package bench

import "hone/engine"

// loraFLOPsPerToken counts a LoRA step's matrix products: the frozen base
// runs forward and the input-gradient products only (4 per weight a token
// multiplies: of the experts, only the routed ones; no embedding lookup),
// the adapter forward and backward (6 per weight), plus attention.
func loraFLOPsPerToken(c *engine.Config, seq int, adapterParams int) float64 {
	attn := 6 * float64(c.NumHiddenLayers) * float64(seq) * float64(c.QDim())
	return 4*float64(matmulParams(c)) + 6*float64(adapterParams) + attn
}
