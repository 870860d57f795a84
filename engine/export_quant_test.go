package engine

// QuantMatMulOn runs quantMatMul on dev for tests of package engine_test.
func QuantMatMulOn(dev Device, q QuantMatrix, y, x []float32, n, in, out int, acc bool) {
	(&Model{Dev: dev}).quantMatMul(q, y, x, n, in, out, acc)
}
