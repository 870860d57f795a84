//go:build !(amd64 && cgo)

package gguf

const useAVX512 = false

func dotRowsAVX512(m *Matrix, y, x, xs []float32, o0, o1 int, acc bool) {}
