package engine

// QuantMatrix is a weight matrix held in a block-quantized format (a GGUF
// file's Q8_0 or Q4_K tensor, say) that multiplies activations without
// being expanded: y(n,rows) (+)= x(n,cols)·Wᵀ in fp32.
type QuantMatrix interface {
	MatVec(y, x []float32, n int, acc bool, threads int)
	// DequantizeRows writes rows [o0, o1) of W to dst in fp32.
	DequantizeRows(dst []float32, o0, o1 int)
	// Bytes is the matrix's storage.
	Bytes() int
	// Dims is W's shape.
	Dims() (rows, cols int)
}

type quantMatrix struct {
	q       QuantMatrix
	threads int
	only    bool // the model holds no fp32 copy (LoadQuantized)
}

// SetQuantized makes decoding (Decoder steps, the serving path) multiply
// by q wherever it would multiply by w, one of m.Params' weight views (a
// layer's projection or LMHead), with up to threads goroutines. q must
// hold the same matrix as w, rounded as its format rounds; the fp32
// weights stay for the prompt's prefill and for everything else. Decoding
// reads quantized weights only on a device whose buffers are host memory
// (cpu) and in fp32 decoding (not DecodeBF16 or FrozenBF16).
func (m *Model) SetQuantized(w []float32, q QuantMatrix, threads int) {
	if m.quant == nil {
		m.quant = map[*float32]quantMatrix{}
	}
	m.quant[&w[0]] = quantMatrix{q: q, threads: threads}
}

// quantFor is the quantized form of w set by SetQuantized, if any.
func (m *Model) quantFor(w []float32) (quantMatrix, bool) {
	if m.quant == nil || len(w) == 0 {
		return quantMatrix{}, false
	}
	q, ok := m.quant[&w[0]]
	return q, ok
}
