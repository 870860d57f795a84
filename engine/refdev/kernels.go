package refdev

import (
	"math"

	"hone/engine"
)

// bf16 conversions: round to nearest even, NaN stays NaN.
func toBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	return uint16((u + 0x7fff + (u>>16)&1) >> 16)
}

func fromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

func (d *Device) ToBF16(dst []uint16, src []float32) {
	o, s := d.b16.data(dst), d.f32.data(src)
	for i, v := range s {
		o[i] = toBF16(v)
	}
}

// matmul is the naive triple loop over element accessors.
func matmul(c []float32, a, b func(i int) float32, m, n, k int, f engine.MatMulFlags) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for p := 0; p < k; p++ {
				ai, bi := i*k+p, p*n+j
				if f.TransA {
					ai = p*m + i
				}
				if f.TransB {
					bi = j*k + p
				}
				s += a(ai) * b(bi)
			}
			if f.Acc {
				c[i*n+j] += s
			} else {
				c[i*n+j] = s
			}
		}
	}
}

func (d *Device) MatMul(c, a, b []float32, m, n, k int, f engine.MatMulFlags) {
	A, B := d.f32.data(a), d.f32.data(b)
	matmul(d.f32.data(c), func(i int) float32 { return A[i] }, func(i int) float32 { return B[i] }, m, n, k, f)
}

func (d *Device) MatMulBF16(c []float32, a, b []uint16, m, n, k int, f engine.MatMulFlags) {
	A, B := d.b16.data(a), d.b16.data(b)
	matmul(d.f32.data(c), func(i int) float32 { return fromBF16(A[i]) }, func(i int) float32 { return fromBF16(B[i]) }, m, n, k, f)
}

func (d *Device) Embedding(out []float32, ids []int32, table []float32, n, dim int) {
	o, id, t := d.f32.data(out), d.i32.data(ids), d.f32.data(table)
	for i := 0; i < n; i++ {
		copy(o[i*dim:(i+1)*dim], t[int(id[i])*dim:])
	}
}

func (d *Device) EmbeddingBF16(out []float32, ids []int32, table []uint16, n, dim int) {
	o, id, t := d.f32.data(out), d.i32.data(ids), d.b16.data(table)
	for i := 0; i < n; i++ {
		for j := 0; j < dim; j++ {
			o[i*dim+j] = fromBF16(t[int(id[i])*dim+j])
		}
	}
}

func (d *Device) EmbeddingBackward(dtable []float32, ids []int32, dout []float32, n, dim int) {
	dt, id, do := d.f32.data(dtable), d.i32.data(ids), d.f32.data(dout)
	for i := 0; i < n; i++ {
		for j := 0; j < dim; j++ {
			dt[int(id[i])*dim+j] += do[i*dim+j]
		}
	}
}

func (d *Device) RMSNorm(out []float32, out16 []uint16, rstd, x, w []float32, n, dim int, eps float32) {
	o, o16, r, X, W := d.f32.data(out), d.b16.data(out16), d.f32.data(rstd), d.f32.data(x), d.f32.data(w)
	for i := 0; i < n; i++ {
		var ss float32
		for j := 0; j < dim; j++ {
			ss += X[i*dim+j] * X[i*dim+j]
		}
		r[i] = 1 / float32(math.Sqrt(float64(ss/float32(dim)+eps)))
		for j := 0; j < dim; j++ {
			o[i*dim+j] = X[i*dim+j] * r[i] * W[j]
			if o16 != nil {
				o16[i*dim+j] = toBF16(o[i*dim+j])
			}
		}
	}
}

// RMSNormBackward: with y = w·x·r, r = (mean(x²)+eps)^-½,
// dx = r·w·dy − x·r³·mean(w·dy·x) and dw = Σ dy·x·r.
func (d *Device) RMSNormBackward(dx []float32, dx16 []uint16, dw, dout, x, w, rstd []float32, n, dim int) {
	DX, DW, DO, X, W, R := d.f32.data(dx), d.f32.data(dw), d.f32.data(dout), d.f32.data(x), d.f32.data(w), d.f32.data(rstd)
	DX16 := d.b16.data(dx16)
	for i := 0; i < n; i++ {
		r := R[i]
		var dot float32
		for j := 0; j < dim; j++ {
			dot += W[j] * DO[i*dim+j] * X[i*dim+j]
		}
		for j := 0; j < dim; j++ {
			DX[i*dim+j] += r*W[j]*DO[i*dim+j] - X[i*dim+j]*r*r*r*dot/float32(dim)
			DW[j] += DO[i*dim+j] * X[i*dim+j] * r
			if DX16 != nil {
				DX16[i*dim+j] = toBF16(DX[i*dim+j])
			}
		}
	}
}

func (d *Device) AddBias(y, b []float32, n, dim int) {
	Y, B := d.f32.data(y), d.f32.data(b)
	for i := 0; i < n*dim; i++ {
		Y[i] += B[i%dim]
	}
}

func (d *Device) BiasBackward(db, dy []float32, n, dim int) {
	DB, DY := d.f32.data(db), d.f32.data(dy)
	for i := 0; i < n*dim; i++ {
		DB[i%dim] += DY[i]
	}
}

// rope rotates each head's halves (x1, x2) by the position's angle; sign
// −1 applies the inverse rotation (the gradient).
func (d *Device) rope(x []float32, pos []int32, cos, sin []float32, n, heads, hd int, sign float32) {
	X, P, C, S := d.f32.data(x), d.i32.data(pos), d.f32.data(cos), d.f32.data(sin)
	half := hd / 2
	for i := 0; i < n; i++ {
		for h := 0; h < heads; h++ {
			v := X[(i*heads+h)*hd:][:hd]
			for e := 0; e < half; e++ {
				c, s := C[int(P[i])*half+e], sign*S[int(P[i])*half+e]
				x1, x2 := v[e], v[e+half]
				v[e], v[e+half] = x1*c-x2*s, x2*c+x1*s
			}
		}
	}
}

func (d *Device) RoPE(x []float32, pos []int32, cos, sin []float32, n, heads, hd int) {
	d.rope(x, pos, cos, sin, n, heads, hd, 1)
}

func (d *Device) RoPEBackward(dx []float32, pos []int32, cos, sin []float32, n, heads, hd int) {
	d.rope(dx, pos, cos, sin, n, heads, hd, -1)
}

func silu(g float32) float32 { return g / (1 + float32(math.Exp(float64(-g)))) }

func (d *Device) SwiGLU(h []float32, h16 []uint16, gate, up []float32, n int) {
	H, H16, G, U := d.f32.data(h), d.b16.data(h16), d.f32.data(gate), d.f32.data(up)
	for i := 0; i < n; i++ {
		H[i] = silu(G[i]) * U[i]
		if H16 != nil {
			H16[i] = toBF16(H[i])
		}
	}
}

// SwiGLUBackward: silu'(g) = σ(g)·(1 + g·(1 − σ(g))).
func (d *Device) SwiGLUBackward(dgate, dup []float32, dgate16, dup16 []uint16, dh, gate, up []float32, n int) {
	DG, DU, DH, G, U := d.f32.data(dgate), d.f32.data(dup), d.f32.data(dh), d.f32.data(gate), d.f32.data(up)
	DG16, DU16 := d.b16.data(dgate16), d.b16.data(dup16)
	for i := 0; i < n; i++ {
		s := 1 / (1 + float32(math.Exp(float64(-G[i]))))
		dg, du := DH[i]*U[i]*s*(1+G[i]*(1-s)), DH[i]*G[i]*s
		if DG != nil { // nil: only the bf16 casts
			DG[i], DU[i] = dg, du
		}
		if DG16 != nil {
			DG16[i], DU16[i] = toBF16(dg), toBF16(du)
		}
	}
}

func (d *Device) CrossEntropy(dlogits []float32, dlogits16 []uint16, logits []float32, targets []int32, n, vocab int, scale float32) (float64, int) {
	DL, DL16, L, T := d.f32.data(dlogits), d.b16.data(dlogits16), d.f32.data(logits), d.i32.data(targets)
	var loss float64
	correct := 0
	for i := 0; i < n; i++ {
		row := L[i*vocab : (i+1)*vocab]
		t := int(T[i])
		if t < 0 {
			if DL != nil {
				clear(DL[i*vocab : (i+1)*vocab])
			}
			if DL16 != nil {
				clear(DL16[i*vocab : (i+1)*vocab])
			}
			continue
		}
		arg := 0
		for j, v := range row {
			if v > row[arg] {
				arg = j
			}
		}
		if arg == t {
			correct++
		}
		mx := row[arg]
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v - mx))
		}
		loss += float64(mx) + math.Log(sum) - float64(row[t])
		if DL != nil {
			g := DL[i*vocab : (i+1)*vocab]
			for j, v := range row {
				p := float32(math.Exp(float64(v-mx)) / sum)
				if j == t {
					p--
				}
				g[j] = scale * p // row[j] is read before g[j] is written: g may alias row
				if DL16 != nil {
					DL16[i*vocab+j] = toBF16(g[j])
				}
			}
		}
	}
	return loss, correct
}

func (d *Device) Copy(dst, src []float32) { copy(d.f32.data(dst), d.f32.data(src)) }
func (d *Device) Zero(x []float32)        { clear(d.f32.data(x)) }

func (d *Device) SumSquares(x []float32) float64 {
	var s float64
	for _, v := range d.f32.data(x) {
		s += float64(v) * float64(v)
	}
	return s
}

// AdamW as torch.optim.AdamW: decay, then the bias-corrected Adam update.
func (d *Device) AdamW(p, g, m, v []float32, p16 []uint16, s engine.AdamWStep) {
	P, G, M, V, P16 := d.f32.data(p), d.f32.data(g), d.f32.data(m), d.f32.data(v), d.b16.data(p16)
	gs := s.GradScale
	if gs == 0 {
		gs = 1
	}
	bc1 := 1 - math.Pow(float64(s.Beta1), float64(s.Step))
	bc2 := 1 - math.Pow(float64(s.Beta2), float64(s.Step))
	for i := range P {
		gi := G[i] * gs
		M[i] = s.Beta1*M[i] + (1-s.Beta1)*gi
		V[i] = s.Beta2*V[i] + (1-s.Beta2)*gi*gi
		mh, vh := float64(M[i])/bc1, float64(V[i])/bc2
		P[i] = P[i]*(1-s.LR*s.WeightDecay) - float32(float64(s.LR)*mh/(math.Sqrt(vh)+float64(s.Eps)))
		if P16 != nil {
			P16[i] = toBF16(P[i])
		}
	}
}
