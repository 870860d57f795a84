package engine

// Device is the seam between the model and the hardware. Layer code in this
// package calls only these methods; a backend (engine/cpu today, CUDA later)
// implements them.
//
// Memory. Every kernel operand is allocated by the device (Alloc, AllocBF16,
// AllocInt32) and released with Free. A buffer is a Go slice used as a
// handle: callers may take sub-slices of it (views, pointer arithmetic
// only) and pass them to kernels, but never read or write its elements;
// host data moves in and out through Upload and Download. The CPU device
// hands out Go memory and copies, so its zero-copy is an implementation
// detail; a GPU device may return slices over device memory. Kernels may
// run asynchronously: Download and the methods that return values (loss,
// sums) wait for the work queued before them, and Sync waits for all of it.
//
// Argument order follows llm.c: outputs, inputs, weights, then sizes. Shapes
// use the legend of model.go. Methods whose name ends in Backward add (+=) into
// parameter gradients and into the residual-stream gradient where documented,
// so micro-batches accumulate after one explicit zeroing; other outputs are
// overwritten. Methods are called from one goroutine at a time.
//
// Devices are constructed through OpenDevice (see registry.go).
type Device interface {
	// Name describes the device for logs and benchmarks.
	Name() string

	// Alloc returns n zeroed floats, AllocBF16 n zeroed bf16 values (raw
	// bits), AllocInt32 n zeroed int32s (token ids, positions, targets).
	Alloc(n int) []float32
	AllocBF16(n int) []uint16
	AllocInt32(n int) []int32
	// Free releases a buffer an Alloc method returned (the whole slice,
	// not a view). Using it afterwards is undefined.
	Free(x []float32)
	FreeBF16(x []uint16)
	FreeInt32(x []int32)
	// Upload copies host memory src into device buffer dst (len(src)
	// elements); Download copies device buffer src into host memory dst
	// (len(dst) elements), after the work queued before it.
	Upload(dst, src []float32)
	UploadInt32(dst, src []int32)
	// UploadBF16 copies host bf16 values (raw bits) into a device buffer.
	UploadBF16(dst, src []uint16)
	Download(dst, src []float32)
	// Sync waits until every kernel queued so far has finished.
	Sync()
	// AttentionScratch is the most memory, in bytes, that Attention and
	// AttentionBackward hold internally for these sizes, so memory
	// estimates need not know the device's blocking rule.
	AttentionScratch(b, t, nh, nkv, hd int) int64

	// ToBF16 rounds src to bf16 (nearest even) into dst.
	ToBF16(dst []uint16, src []float32)

	// MatMul computes c(m,n) = op(a)(m,k) · op(b)(k,n), or adds it to c when
	// f.Acc is set. op transposes a row-major operand when its flag is set:
	// a is then stored (k,m), b stored (n,k).
	MatMul(c, a, b []float32, m, n, k int, f MatMulFlags)
	// MatMulBF16 is MatMul with bf16 operands and fp32 accumulation and output.
	MatMulBF16(c []float32, a, b []uint16, m, n, k int, f MatMulFlags)
	// MatMulW16 computes c(m,n) = a(m,k)·bᵀ, or adds it into c with acc,
	// for bf16 weights b stored (n,k) (a linear layer's layout): b widened
	// exactly to fp32, activations a, products and sums in fp32. Decoding
	// uses it: reading bf16 weights is half the memory traffic of fp32.
	MatMulW16(c, a []float32, b []uint16, m, n, k int, acc bool)

	// Embedding gathers rows: out(N,C) = table[ids].
	Embedding(out []float32, ids []int32, table []float32, n, dim int)
	// EmbeddingBF16 gathers rows of a bf16 table, widened to fp32: the
	// embedding lookup of a frozen bf16 base (Options.FrozenBF16).
	EmbeddingBF16(out []float32, ids []int32, table []uint16, n, dim int)
	// EmbeddingBackward scatters: dtable[ids] += dout.
	EmbeddingBackward(dtable []float32, ids []int32, dout []float32, n, dim int)

	// RMSNorm: out = x * rstd * w with rstd = 1/sqrt(mean(x²)+eps) per row,
	// computed in fp32. rstd(N) is saved for the backward pass. When out16
	// is non-nil it also receives out in bf16: the next matmul's input cast,
	// fused.
	RMSNorm(out []float32, out16 []uint16, rstd, x, w []float32, n, dim int, eps float32)
	// RMSNormBackward adds into dx(N,C) and dw(C). When dx16 is non-nil it
	// also receives the updated dx in bf16: the cast the next backward
	// product (the attention output projection's) reads, fused.
	RMSNormBackward(dx []float32, dx16 []uint16, dw, dout, x, w, rstd []float32, n, dim int)

	// LayerNorm is RMSNorm's counterpart without bias (DBRX): out = (x −
	// mean) * rstd * w, rstd = 1/sqrt(var + eps) with the biased variance.
	LayerNorm(out []float32, out16 []uint16, rstd, x, w []float32, n, dim int, eps float32)
	// LayerNormBackward adds into dx(N,C) and dw(C); it recomputes each
	// row's mean from x.
	LayerNormBackward(dx, dw, dout, x, w, rstd []float32, n, dim int)
	// Clamp limits x to [−lim, lim] in place; ClampBackward zeroes dx where
	// the unclamped x lies outside it (DBRX's clip_qkv).
	Clamp(x []float32, lim float32)
	ClampBackward(dx, x []float32, lim float32)

	// AddBias adds b(C) to every row of y(N,C).
	AddBias(y, b []float32, n, dim int)
	// BiasBackward adds the column sums of dy(N,C) into db(C).
	BiasBackward(db, dy []float32, n, dim int)

	// RoPE rotates x(N,heads,hd) in place in the HF rotate_half layout, token i
	// at position pos[i]; cos and sin are (maxPos, hd/2) tables.
	RoPE(x []float32, pos []int32, cos, sin []float32, n, heads, hd int)
	// RoPEBackward applies the inverse rotation to the gradient dx in place.
	RoPEBackward(dx []float32, pos []int32, cos, sin []float32, n, heads, hd int)

	// Attention computes causal softmax attention scaled by 1/sqrt(hd) over
	// q(B,T,NH,hd), k,v(B,T,NKV,hd) into out(B,T,NH,hd), where query t sees
	// keys docStart[b*T+t] .. t only (packed documents), and saves the
	// log-sum-exp of each score row in lse(B,NH,T). A window w > 0 also
	// hides keys w or more positions behind the query (sliding-window
	// attention: query t sees keys max(docStart, t-w+1) .. t); 0 is none.
	Attention(out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int)
	// AttentionCached is attention for decoding: nq new queries q(nq,NH,hd)
	// at positions start.. attend causally to the cached keys and values
	// kc, vc (start+nq, NKV, hd) of one sequence, within the window as in
	// Attention; out is (nq,NH,hd).
	AttentionCached(out, q, kc, vc []float32, start, nq, nh, nkv, hd, window int)
	// AttentionBackward overwrites dq, dk, dv.
	AttentionBackward(dq, dk, dv, dout, out, lse, q, k, v []float32, docStart []int32, b, t, nh, nkv, hd, window int)

	// SwiGLU: h = silu(gate) * up, all (N,F); h16, when non-nil, receives h
	// in bf16 for the down projection.
	SwiGLU(h []float32, h16 []uint16, gate, up []float32, n int)
	// SwiGLUBackward overwrites dgate and dup; dgate16 and dup16, when
	// non-nil (both or neither), receive them in bf16 in the same pass for
	// the gate and up projections' backward products. With the bf16 pair
	// given, dgate and dup may be nil (both): only the casts are written,
	// for a model whose products read nothing else.
	SwiGLUBackward(dgate, dup []float32, dgate16, dup16 []uint16, dh, gate, up []float32, n int)

	// GatherRows copies rows: out(n,dim) row j = x[idx[j]], times scale[j]
	// when scale is non-nil (the tokens routed to an expert, gathered).
	GatherRows(out, x []float32, idx []int32, scale []float32, n, dim int)
	// ScatterAddRows adds rows back: x[idx[j]] += scale[j] * y[j] for the
	// n rows of y(n,dim), scale nil meaning 1. Several j may share an idx.
	ScatterAddRows(x, y []float32, idx []int32, scale []float32, n, dim int)
	// RowDots writes out[j] = x[idx[j]] · y[j] for the n rows of y(n,dim)
	// (the gradient of a routing weight).
	RowDots(out, x []float32, idx []int32, y []float32, n, dim int)

	// CrossEntropy takes logits(N,V) and targets(N) (-1 = not scored) and
	// returns the summed loss over scored rows and how many of them have
	// their target as the arg-max. When dlogits is non-nil it is
	// overwritten with scale * d(loss sum)/d(logits); it may alias logits.
	// When dlogits16 is non-nil it receives that gradient in bf16 instead
	// (for the head's bf16 products, no fp32 gradient written and cast):
	// dlogits must then be given too and serves only as scratch, its
	// contents left unspecified.
	CrossEntropy(dlogits []float32, dlogits16 []uint16, logits []float32, targets []int32, n, vocab int, scale float32) (float64, int)

	// Copy copies src into dst (device to device); Zero clears x.
	Copy(dst, src []float32)
	Zero(x []float32)
	// SumSquares returns the sum of squares of x, accumulated in float64.
	SumSquares(x []float32) float64

	// AdamW updates p in place from gradient g and moments m, v (all the same
	// length) with decoupled weight decay; see AdamWStep. When p16 is
	// non-nil it also receives the updated p rounded to bf16, saving the
	// separate pass over the weights that BF16 mode needs each step.
	AdamW(p, g, m, v []float32, p16 []uint16, s AdamWStep)
	// LionW updates p in place from gradient g and its one moment m (all
	// the same length); see LionWStep. p16 is as for AdamW.
	LionW(p, g, m []float32, p16 []uint16, s LionWStep)
}

// MatMulFlags name the variants of a matrix product, so call sites read
// MatMulFlags{TransB: true} instead of a row of booleans.
type MatMulFlags struct {
	TransA bool // a is stored (k,m)
	TransB bool // b is stored (n,k)
	Acc    bool // c += product instead of c = product
}

// LionWStep holds the scalars of one LionW update of one parameter range:
// p ← p·Decay − LR·sign(β1·m + (1−β1)·g), then m ← β2·m + (1−β2)·g, with
// sign(0) = 0 and g scaled by GradScale (0 means 1) as it is read.
type LionWStep struct {
	LR, Beta1, Beta2 float32
	// Decay multiplies p before the update: 1 − (lr/peak lr)·weight decay,
	// the decoupled decay of composer's DecoupledLionW, so 1 is none.
	Decay     float32
	GradScale float32
}

// AdamWStep holds the scalars of one AdamW update of one parameter range.
type AdamWStep struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
	Step                               int // 1-based, for bias correction
	// GradScale multiplies every gradient as it is read (global-norm
	// clipping without a separate pass); 0 means 1.
	GradScale float32
}
