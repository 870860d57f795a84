package engine

import "math/rand/v2"

// LoRA dropout, as PEFT applies it: while training, each adapted
// projection computes scale·B·A·dropout(x), with its own mask. The masks
// are drawn from a seed the trainer gives per micro-batch
// (ForwardBackwardDropout), one stream per layer and projection, so the
// backward pass (and a recomputed forward) draws the same mask again and a
// resumed run draws the masks the uninterrupted one drew. The element-wise
// work runs on host views of the device buffers.

// dropout is an adapter's dropout state and scratch.
type dropout struct {
	on   bool // a training pass with dropout is under way
	seed uint64
	// x (N, in) holds the dropped input; dx (N, in) the gradient through A
	// before the mask; mask (N, in) on the host is 0 or 1/(1-p) per element.
	x, dx []float32
	mask  []float32
	n     int
}

func (dr *dropout) free(d Device) {
	if dr.n > 0 {
		freeAll(d, dr.x, dr.dx)
	}
	dr.x, dr.dx, dr.mask, dr.n = nil, nil, nil, 0
}

// ForwardBackwardDropout is ForwardBackward with the attached adapter's
// dropout on (when its Dropout is positive), the masks drawn from seed.
// ForwardBackward, Evaluate and Logits never drop.
func (m *Model) ForwardBackwardDropout(bt *Batch, scale float32, seed uint64) (sum float64, count int) {
	if a := m.lora; a != nil && a.Config.Dropout > 0 {
		a.drop.on, a.drop.seed = true, seed
		defer func() { a.drop.on = false }()
	}
	return m.ForwardBackward(bt, scale)
}

// dropped returns x(n,in) itself when no dropout pass is under way, else
// the dropped copy mask⊙x for projection p of layer l, leaving the mask in
// a.drop.mask.
func (a *Adapter) dropped(l, p int, x []float32, n, in int) []float32 {
	dr := &a.drop
	if !dr.on {
		return x
	}
	if size := n * maxProjIn(a); dr.n < size {
		dr.free(a.dev)
		dr.x, dr.dx, dr.mask, dr.n = a.dev.Alloc(size), a.dev.Alloc(size), make([]float32, size), size
	}
	mask := dr.mask[:n*in]
	rng := rand.New(rand.NewPCG(dr.seed, uint64(l*numProj+p)))
	keep := float32(1 / (1 - a.Config.Dropout))
	pr := float32(a.Config.Dropout)
	for i := range mask {
		if rng.Float32() < pr {
			mask[i] = 0
		} else {
			mask[i] = keep
		}
	}
	out := dr.x[:n*in]
	src := HostView(a.dev, x[:n*in])
	_ = FillDevice(a.dev, out, func(host []float32) error {
		for i, v := range src {
			host[i] = v * mask[i]
		}
		return nil
	})
	return out
}

// addMasked adds mask⊙g into dx, with the mask dropped left.
func (a *Adapter) addMasked(dx, g []float32) {
	mask := a.drop.mask[:len(g)]
	gh, dxh := HostView(a.dev, g), HostView(a.dev, dx[:len(g)])
	_ = FillDevice(a.dev, dx[:len(g)], func(host []float32) error {
		for i, v := range gh {
			host[i] = dxh[i] + v*mask[i]
		}
		return nil
	})
}

// maxProjIn is the widest input of a projection.
func maxProjIn(a *Adapter) int {
	w := 0
	for l := range a.p {
		for p := range a.p[l] {
			if a.p[l][p].A != nil {
				w = max(w, len(a.p[l][p].A)/a.Config.Rank)
			}
		}
	}
	return w
}
