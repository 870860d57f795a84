package engine

import "strings"

// The global gradient norm of a full fine-tune is fused into the backward
// pass of a step's last micro-batch: each decoder layer's gradient range is
// summed (squares, in float64) right after its backward pass finishes it,
// while much of it is still in cache, and the rest of the arena (embeddings,
// final norm, head) at the end of the pass. The optimizer then takes the
// norm from GradNorm without its own pass over every gradient. The sum is
// Σ_ranges SumSquares(range) rather than SumSquares(arena): the terms are
// the same, grouped per layer, so the result differs from the unfused norm
// only by float64 rounding (relative ~1e-15), far inside SumSquares'
// documented accuracy, and it is deterministic, so resumed runs match.
type gradNorm struct {
	armed  bool      // the next ForwardBackward computes the norm
	active bool      // this pass computes it
	valid  bool      // sq holds the norm² of the current gradients
	layers [][2]int  // per decoder layer, its arena range
	rest   [][2]int  // the ranges outside the layers
	part   []float64 // per layer, its sum of squares
	sq     float64
}

// FuseGradNorm makes the next ForwardBackward, which must be the last
// micro-batch of the optimizer step, compute the gradients' squared norm as
// it finishes them, so GradNorm needs no pass of its own. Nothing may change
// Grads between that pass and GradNorm (a data-parallel reduction does:
// there, leave it off). It does nothing for a frozen base, whose Grads the
// optimizer does not read, or when the layers' tensors are not contiguous.
func (m *Model) FuseGradNorm() {
	if m.Opt.frozenBase() {
		return
	}
	g := &m.gnorm
	if g.layers == nil && g.rest == nil {
		g.layers, g.rest = layerRanges(m.Config.ParamSpecs(), len(m.Grads.Arena), m.Config.NumHiddenLayers)
		g.part = make([]float64, len(g.layers))
	}
	g.armed = len(g.layers) > 0
}

// startGradNorm begins a backward pass: whatever it adds makes a held norm
// stale.
func (m *Model) startGradNorm() {
	g := &m.gnorm
	g.valid, g.active, g.armed = false, g.armed, false
	clear(g.part)
}

// layerGradNorm sums layer l's finished gradients.
func (m *Model) layerGradNorm(l int) {
	if g := &m.gnorm; g.active {
		rg := g.layers[l]
		g.part[l] = m.Dev.SumSquares(m.Grads.Arena[rg[0]:rg[1]])
	}
}

// finishGradNorm adds the rest of the arena once the pass is over.
func (m *Model) finishGradNorm() {
	g := &m.gnorm
	if !g.active {
		return
	}
	g.active = false
	var s float64
	for _, p := range g.part {
		s += p
	}
	for _, rg := range g.rest {
		s += m.Dev.SumSquares(m.Grads.Arena[rg[0]:rg[1]])
	}
	g.sq, g.valid = s, true
}

// layerRanges splits an arena of n floats laid out by specs into each
// decoder layer's contiguous range and the ranges between them; nil, nil
// when a layer's tensors are not contiguous and in order.
func layerRanges(specs []ParamSpec, n, numLayers int) (layers, rest [][2]int) {
	layers = make([][2]int, numLayers)
	size := make([]int, numLayers)
	for l := range layers {
		layers[l] = [2]int{n, 0}
	}
	for _, s := range specs {
		l, ok := specLayer(s.Name)
		if !ok {
			continue
		}
		if l >= numLayers {
			return nil, nil
		}
		layers[l] = [2]int{min(layers[l][0], s.Offset), max(layers[l][1], s.Offset+s.Size())}
		size[l] += s.Size()
	}
	at := 0
	for l, rg := range layers {
		if size[l] == 0 || rg[1]-rg[0] != size[l] || rg[0] < at || rg[1] > n {
			return nil, nil
		}
		if rg[0] > at {
			rest = append(rest, [2]int{at, rg[0]})
		}
		at = rg[1]
	}
	if at < n {
		rest = append(rest, [2]int{at, n})
	}
	return layers, rest
}

// specLayer parses the decoder layer index from a tensor name
// (".layers.N." or ".blocks.N.").
func specLayer(name string) (int, bool) {
	for _, key := range []string{"layers.", "blocks."} {
		i := strings.Index(name, key)
		if i < 0 || (i > 0 && name[i-1] != '.') {
			continue
		}
		rest := name[i+len(key):]
		j := strings.IndexByte(rest, '.')
		if j <= 0 {
			continue
		}
		l := 0
		for _, c := range rest[:j] {
			if c < '0' || c > '9' {
				return 0, false
			}
			l = 10*l + int(c-'0')
		}
		return l, true
	}
	return 0, false
}
