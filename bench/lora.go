package bench

import (
	"math"

	"hone/engine"
	"hone/optim"
)

// loraTrainer is the adapter side of a LoRA benchmark: the adapter attached
// to the frozen model, and AdamW with global-norm clipping over its
// weights only, as optim.AdamW does for a full model (same defaults).
type loraTrainer struct {
	a     *engine.Adapter
	m, v  []float32
	steps int
	cfg   optim.AdamWConfig
}

func newLoRATrainer(m *engine.Model, lc engine.LoRAConfig, seed uint64) (*loraTrainer, error) {
	a, err := engine.NewAdapter(m.Config, m.Dev, lc)
	if err != nil {
		return nil, err
	}
	a.InitPEFT(seed)
	if err := m.Attach(a); err != nil {
		return nil, err
	}
	return &loraTrainer{a: a, m: m.Dev.Alloc(len(a.Params)), v: m.Dev.Alloc(len(a.Params)), cfg: optim.DefaultAdamW}, nil
}

// step clips the adapter's gradients and applies one AdamW update.
func (t *loraTrainer) step(dev engine.Device, lr float64) {
	norm := math.Sqrt(dev.SumSquares(t.a.Grads))
	scale := float32(1)
	if c := t.cfg.MaxGradNorm; c > 0 && norm > c {
		scale = float32(c / (norm + 1e-6))
	}
	t.steps++
	dev.AdamW(t.a.Params, t.a.Grads, t.m, t.v, nil, engine.AdamWStep{
		LR: float32(lr), Beta1: float32(t.cfg.Beta1), Beta2: float32(t.cfg.Beta2), Eps: float32(t.cfg.Eps),
		WeightDecay: float32(t.cfg.WeightDecay), Step: t.steps, GradScale: scale,
	})
}

// loraFLOPsPerToken counts a LoRA step's matrix products: the frozen base
// runs forward and the input-gradient products only (4 per weight a token
// uses: of the experts, only the routed ones), the adapter forward and
// backward (6 per weight), plus attention.
func loraFLOPsPerToken(c *engine.Config, seq int, adapterParams int) float64 {
	attn := 6 * float64(c.NumHiddenLayers) * float64(seq) * float64(c.QDim())
	return 4*float64(c.ActiveParams()) + 6*float64(adapterParams) + attn
}
