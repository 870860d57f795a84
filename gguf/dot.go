package gguf

import (
	"fmt"
	"runtime"
	"sync"
)

// Matrix is a row-major matrix of Rows rows of Cols elements held in a
// block type, as a GGUF file stores it: what a quantized linear layer
// multiplies with, y = x·Wᵀ, without expanding W.
type Matrix struct {
	Type       TensorType
	Rows, Cols int
	Data       []byte
	rowBytes   int
}

// NewMatrix checks data's size against the shape.
func NewMatrix(t TensorType, rows, cols int, data []byte) (*Matrix, error) {
	if t.BlockSize() == 0 || cols%t.BlockSize() != 0 || len(data) != rows*t.RowBytes(cols) {
		return nil, fmt.Errorf("gguf: %v matrix %dx%d: %d bytes, or rows not whole blocks", t, rows, cols, len(data))
	}
	return &Matrix{Type: t, Rows: rows, Cols: cols, Data: data, rowBytes: t.RowBytes(cols)}, nil
}

// DotKernels says which kernels MatVec uses: "int8-avx512vnni" or
// "int8-avx2" (integer dot products on 8-bit activations, where the CPU
// has them; see q8.go), "avx512" (dequantize-and-dot on fp32 activations,
// C through cgo) or "go" (the portable fp32 kernel).
func DotKernels() string { return kernelNames[dotKernel] }

// MatVec computes, for each of the n rows of x (Cols elements each),
// y[r*Rows+o] = Σ_k W[o][k]·x[r*Cols+k], adding to y when acc is set,
// with up to threads goroutines over the output rows (0: GOMAXPROCS).
// With the integer kernels (DotKernels "int8-*") x is first quantized to
// 8 bits as llama.cpp does (Q8_0 blocks for Q8_0 weights, Q8_K for the
// k-quants); otherwise products and sums are fp32 on x as it is.
func (m *Matrix) MatVec(y, x []float32, n int, acc bool, threads int) {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	threads = max(1, min(threads, m.Rows/64))
	if intDots(m.Type) {
		a := quantizeActs(m.Type, x, n, m.Cols)
		parallelRows(m.Rows, threads, func(o0, o1 int) { m.intDotRows(y, a, n, o0, o1, acc) })
		q8Pool.Put(a)
		return
	}
	var xs []float32 // Q4_K: each 32-element group's sum of x, for the mins
	if m.Type == Q4_K {
		xs = make([]float32, n*m.Cols/32)
		for i := range xs {
			var s float32
			for _, v := range x[32*i : 32*i+32] {
				s += v
			}
			xs[i] = s
		}
	}
	run := func(o0, o1 int) {
		for r := 0; r < n; r++ {
			xr := x[r*m.Cols : (r+1)*m.Cols]
			var xsr []float32
			if xs != nil {
				xsr = xs[r*m.Cols/32 : (r+1)*m.Cols/32]
			}
			m.dotRows(y[r*m.Rows+o0:r*m.Rows+o1], xr, xsr, o0, o1, acc)
		}
	}
	parallelRows(m.Rows, threads, run)
}

// parallelRows runs f over [0, rows) in threads contiguous chunks.
func parallelRows(rows, threads int, f func(o0, o1 int)) {
	if threads == 1 {
		f(0, rows)
		return
	}
	chunk := (rows + threads - 1) / threads
	var wg sync.WaitGroup
	for o := 0; o < rows; o += chunk {
		wg.Add(1)
		go func(o0, o1 int) {
			defer wg.Done()
			f(o0, o1)
		}(o, min(rows, o+chunk))
	}
	wg.Wait()
}

// dotRows writes y[i] (+)= row o0+i of W · x for o0 <= o < o1.
func (m *Matrix) dotRows(y, x, xs []float32, o0, o1 int, acc bool) {
	if useAVX512 && dotKernel != kernGo && (m.Type == Q8_0 || m.Type == Q4_K || m.Type == Q6_K) {
		dotRowsAVX512(m, y, x, xs, o0, o1, acc)
		return
	}
	m.dotRowsGo(y, x, o0, o1, acc)
}

// dotRowsGo is the portable kernel: each row dequantized, then dotted.
func (m *Matrix) dotRowsGo(y, x []float32, o0, o1 int, acc bool) {
	row := make([]float32, m.Cols)
	for o := o0; o < o1; o++ {
		DequantizeRow(m.Type, row, m.Data[o*m.rowBytes:(o+1)*m.rowBytes])
		var s float32
		for k, v := range row {
			s += v * x[k]
		}
		if acc {
			y[o-o0] += s
		} else {
			y[o-o0] = s
		}
	}
}

// DequantizeRows writes rows [o0, o1) of W to dst, Cols elements a row.
func (m *Matrix) DequantizeRows(dst []float32, o0, o1 int) {
	for o := o0; o < o1; o++ {
		DequantizeRow(m.Type, dst[(o-o0)*m.Cols:(o-o0+1)*m.Cols], m.Data[o*m.rowBytes:(o+1)*m.rowBytes])
	}
}

// Bytes is the size of the matrix's blocks.
func (m *Matrix) Bytes() int { return len(m.Data) }

// Dims is the matrix's shape.
func (m *Matrix) Dims() (rows, cols int) { return m.Rows, m.Cols }
