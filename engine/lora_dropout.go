package engine

import (
	"math/rand/v2"
	"runtime"
	"sync"
)

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
	// row0 is the batch row of a call's first row: the MLP in chunks
	// sets it to the chunk's, so each row keeps its mask.
	row0 int
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
		a.drop.on, a.drop.seed, a.drop.row0 = true, seed, 0
		defer func() { a.drop.on = false }()
		// The buffers at their largest now: growing them call by call
		// would leave the smaller ones behind as garbage.
		N := bt.B * bt.T
		a.drop.reserve(a.dev, m.Config.dropoutSize(a.Config, N, m.Opt.mlpRows(m.Config, N)))
	}
	return m.ForwardBackward(bt, scale)
}

// dropRows tells the adapter's dropout that the next calls' rows start at
// batch row row0.
func (m *Model) dropRows(row0 int) {
	if m.lora != nil {
		m.lora.drop.row0 = row0
	}
}

// reserve makes the buffers hold at least size elements.
func (dr *dropout) reserve(d Device, size int) {
	if dr.n < size {
		dr.free(d)
		dr.x, dr.dx, dr.mask, dr.n = d.Alloc(size), d.Alloc(size), make([]float32, size), size
	}
}

// dropped returns x(n,in) itself when no dropout pass is under way, else
// the dropped copy mask⊙x for the projection whose mask stream is stream,
// leaving the mask in a.drop.mask.
func (a *Adapter) dropped(stream uint64, x []float32, n, in int) []float32 {
	dr := &a.drop
	if !dr.on {
		return x
	}
	dr.reserve(a.dev, n*in)
	mask, out := dr.mask[:n*in], dr.x[:n*in]
	dropoutMask(mask, dr.seed, stream, dr.row0, n, in, a.Config.Dropout)
	src := HostView(a.dev, x[:n*in])
	_ = FillDevice(a.dev, out, func(host []float32) error {
		parallelRows(n, func(lo, hi int) {
			for j := lo * in; j < hi*in; j++ {
				host[j] = src[j] * mask[j]
			}
		})
		return nil
	})
	return out
}

// dropoutMask fills mask (rows, in) with 0 (probability p) or 1/(1-p),
// drawing batch row row0+i from the PCG stream (seed, stream<<32 | row0+i):
// rows draw in parallel, and the mask does not depend on how they are
// split, across CPUs or into chunks of the batch.
func dropoutMask(mask []float32, seed, stream uint64, row0, rows, in int, p float64) {
	keep, pr := float32(1/(1-p)), float32(p)
	parallelRows(rows, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			rng := rand.New(rand.NewPCG(seed, stream<<32|uint64(row0+i)))
			for j := i * in; j < (i+1)*in; j++ {
				mask[j] = keep
				if rng.Float32() < pr {
					mask[j] = 0
				}
			}
		}
	})
}

// parallelRows runs f over [0, n) in contiguous chunks, one per CPU.
func parallelRows(n int, f func(lo, hi int)) { parallelRowsOn(n, runtime.GOMAXPROCS(0), f) }

// parallelRowsOn runs f over [0, n) in up to w contiguous chunks, one
// goroutine each (f itself when w is 1).
func parallelRowsOn(n, w int, f func(lo, hi int)) {
	w = min(w, n)
	if w <= 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	for k := 0; k < w; k++ {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			f(lo, hi)
		}(k*n/w, (k+1)*n/w)
	}
	wg.Wait()
}

// addMasked adds mask⊙g into dx(n, in), with the mask dropped left.
func (a *Adapter) addMasked(dx, g []float32, n, in int) {
	mask := a.drop.mask[:n*in]
	gh, dxh := HostView(a.dev, g[:n*in]), HostView(a.dev, dx[:n*in])
	_ = FillDevice(a.dev, dx[:n*in], func(host []float32) error {
		parallelRows(n, func(lo, hi int) {
			for j := lo * in; j < hi*in; j++ {
				host[j] = dxh[j] + gh[j]*mask[j]
			}
		})
		return nil
	})
}
