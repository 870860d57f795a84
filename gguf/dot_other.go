//go:build !(amd64 && cgo)

package gguf

const useAVX512 = false

func dotRowsAVX512(m *Matrix, y, x, xs []float32, o0, o1 int, acc bool) {}

const (
	useVNNI = false
	useAVX2 = false
)

func (m *Matrix) intDotRows(y []float32, a *q8Row, n, o0, o1 int, acc bool) {
	m.intDotRowsGo(y, a, n, o0, o1, acc)
}

func quantizeQ8KC(qs []int8, d []float32, bs []int16, x []float32) bool { return false }
func quantizeQ8_0C(qs []int8, d []float32, x []float32) bool            { return false }
