package engine

import (
	"fmt"
	"runtime"
	"strings"
	"sync"

	"hone/quant/nf4"
)

// Decoding on an NF4 base (a QLoRA run's eval prompts) multiplies by the
// NF4 matrices as they are held, as LoadQuantized's decoding does by a
// GGUF file's: decode steps read the packed blocks in a dot-product
// kernel (nf4Matrix.MatVec), a long prompt's prefill dequantizes a band
// of rows at a time (quantMatMul), so the weights decoding reads stay at
// about the NF4 size. The values are code×scale in fp32, those of the
// fp32-mode base (DequantizedTensors); BF16 mode trains with them rounded
// to bf16. The embeddings and head are read as training reads them:
// fp32, bf16 (BF16 mode) or NF4 (Options.NF4Embeddings, the head through
// nf4Matrix too).

// nf4Matrix is an NF4-held matrix as a QuantMatrix: one tensor (a layer's
// matrix) or chunks of per rows each (an NF4 head).
type nf4Matrix struct {
	chunks     []*nf4.Tensor
	per        int // rows per chunk
	rows, cols int
	kern       NF4Kernels // nil: quant/nf4's Go kernel (Tensor.Dot)
}

func (q *nf4Matrix) Dims() (rows, cols int) { return q.rows, q.cols }

func (q *nf4Matrix) Bytes() int {
	var n int64
	for _, t := range q.chunks {
		n += t.Bytes()
	}
	return int(n)
}

// segments calls f for each run of rows [o0, o1) of W within one chunk,
// t holding them from its row r0 = o0 - k*per on.
func (q *nf4Matrix) segments(o0, o1 int, f func(t *nf4.Tensor, r0, o0, o1 int)) {
	for o0 < o1 {
		k := o0 / q.per
		e := min(o1, (k+1)*q.per)
		f(q.chunks[k], o0-k*q.per, o0, e)
		o0 = e
	}
}

// DequantizeRows writes rows [o0, o1) of W to dst in fp32.
func (q *nf4Matrix) DequantizeRows(dst []float32, o0, o1 int) {
	q.segments(o0, o1, func(t *nf4.Tensor, r0, a, b int) {
		out := dst[(a-o0)*q.cols : (b-o0)*q.cols]
		lo := r0 * q.cols
		if start := lo / nf4.BlockSize * nf4.BlockSize; start != lo { // a row starting inside a block
			tmp := make([]float32, lo-start+len(out))
			t.Dequantize(tmp, start)
			copy(out, tmp[lo-start:])
			return
		}
		t.Dequantize(out, lo)
	})
}

// MatVec is y(n,rows) (+)= x(n,cols)·Wᵀ with up to threads goroutines over
// W's rows (0: GOMAXPROCS).
func (q *nf4Matrix) MatVec(y, x []float32, n int, acc bool, threads int) {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	parallelRowsOn(q.rows, max(1, min(threads, q.rows/64)), func(o0, o1 int) {
		q.segments(o0, o1, func(t *nf4.Tensor, r0, a, b int) { q.dotRows(t, r0, y[a:], x, n, b-a, acc) })
	})
}

// dotRows writes y[r*q.rows+i] (+)= row r0+i of t · row r of x for i <
// rows: with the device's kernel where W's rows are whole blocks.
func (q *nf4Matrix) dotRows(t *nf4.Tensor, r0 int, y, x []float32, n, rows int, acc bool) {
	C := q.cols
	if q.kern != nil && C%nf4.BlockSize == 0 {
		nb := C / nf4.BlockSize
		sp := getScratch(&scalesPool, rows*nb)
		t.Scales(*sp, r0*nb)
		q.kern.MatVecNF4(y, q.rows, x, n, C, t.Packed[r0*C/2:(r0+rows)*C/2], *sp, &nf4.Code, acc)
		scalesPool.Put(sp)
		return
	}
	for r := 0; r < n; r++ {
		xr := x[r*C : (r+1)*C]
		for i := 0; i < rows; i++ {
			s := t.Dot(xr, (r0+i)*C)
			if acc {
				s += y[r*q.rows+i]
			}
			y[r*q.rows+i] = s
		}
	}
}

// scalesPool holds the block scales a kernel call reads, so that decode
// steps make no garbage of them.
var scalesPool sync.Pool

// nf4Decode is the NF4 base's decoding state: per layer, views like
// Params.Layers' whose matrices are one-element stand-ins that quantFor
// maps to their nf4Matrix (as LoadQuantized's dropped matrices are), and
// the same for an NF4 head.
type nf4Decode struct {
	layers []Layer[float32]
	head   []float32
}

// prepareNF4Decode builds m's nf4Decode on first use; decoding needs the
// device's buffers in host memory, where the kernels read.
func (m *Model) prepareNF4Decode() error {
	q, c := m.nf4, m.Config
	if q.dec != nil {
		return nil
	}
	if !hostAddressable(m.Dev) {
		return fmt.Errorf("decode on an NF4 base: device %s does not hold its buffers in host memory, where the NF4 kernels read", m.Dev.Name())
	}
	kern, _ := nf4Kernel(m.Dev)
	if m.quant == nil {
		m.quant = map[*float32]quantMatrix{}
	}
	standIn := func(mat *nf4Matrix) []float32 {
		mat.kern = kern
		w := make([]float32, 1)
		m.quant[&w[0]] = quantMatrix{q: mat, only: true}
		return w
	}
	d := &nf4Decode{layers: make([]Layer[float32], len(q.tensors))}
	for l, ts := range q.tensors {
		p := m.Params.Layers[l] // the norms and biases
		for k, s := range q.rel {
			*layerMatrix(&p, strings.TrimPrefix(s.Name, c.layerPrefix(0))) = standIn(&nf4Matrix{chunks: ts[k : k+1], per: s.Shape[0], rows: s.Shape[0], cols: s.Shape[1]})
		}
		d.layers[l] = p
	}
	if e := q.emb; e != nil {
		d.head = standIn(&nf4Matrix{chunks: e.head, per: e.rows, rows: c.VocabSize, cols: c.HiddenSize})
	}
	q.dec = d
	return nil
}

// decodeParams is layer l's fp32 weights as decoding reads them.
func (m *Model) decodeParams(l int) *Layer[float32] {
	if m.nf4 != nil {
		return &m.nf4.dec.layers[l]
	}
	return &m.Params.Layers[l]
}
