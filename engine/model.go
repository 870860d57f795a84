// Package engine computes the Llama (LlamaForCausalLM) forward and backward
// passes exactly as Hugging Face transformers defines them, with explicit
// per-layer gradients in the style of llm.c. Mistral (MistralForCausalLM) is
// the same math with sliding-window attention (Config.Window), which the
// Device applies. Mixtral (MixtralForCausalLM) and DBRX (DbrxForCausalLM)
// replace the MLP with a sparse mixture of experts (moe.go, dbrx.go).
//
// Legend for the shapes written on buffers:
//
//	B batch rows, T tokens per row, N = B*T, C hidden_size, F intermediate_size,
//	V vocab_size, NH attention heads, NKV key/value heads, HD head_dim,
//	QD = NH*HD, KVD = NKV*HD, L layers.
//
// The model never touches hardware directly: every buffer is allocated by
// the Device and every kernel goes through it; host data moves only through
// Upload and Download. A Model is not safe for concurrent use; Close
// releases its device memory.
package engine

import (
	"fmt"
	"math"
)

// Options tune memory use without changing the math.
type Options struct {
	// Recompute keeps only each layer's input during the forward pass and
	// recomputes the layer's activations in the backward pass; the last
	// layer's attention outputs are kept (one slot, which costs nothing
	// more; not with CheckpointEvery), so its recomputation skips the
	// attention (keepatt.go).
	Recompute bool
	// LossChunk is how many tokens' logits exist at once in the loss; the
	// full (N,V) logits matrix is never materialised. Default
	// (lossChunk): 256, or as many more multiples of 256 as keep the
	// chunk's fp32 logits within 128 MiB.
	LossChunk int
	// BF16 runs every matrix product with bf16 operands (fp32 accumulation);
	// master weights, gradients, optimizer state, norms, softmax and loss
	// stay fp32.
	BF16 bool
	// CompactBF16 (with BF16) converts each layer's weights to bf16 as the
	// layer runs instead of keeping a bf16 copy of every weight: 2 bytes
	// per parameter less memory for a few percent more time.
	CompactBF16 bool
	// DecodeBF16 makes decoding (Decoder, DecodeStep) read a bf16 copy of
	// the weight matrices, widened to fp32 as they are used: a decode step
	// is bound by reading every weight once, and bf16 halves that. The
	// copy costs 2 bytes per parameter unless BF16 mode keeps one already.
	DecodeBF16 bool
	// FrozenBF16 holds the base weights only in bf16: no fp32 master copy
	// and no base gradients, 2 bytes per parameter instead of 10 to 14
	// (norms and biases stay fp32). It is for training an attached LoRA
	// adapter (Attach) and for evaluation: it implies BF16 matrix products,
	// ForwardBackward needs an adapter, and the model cannot be saved,
	// merged into or decoded. Load fills the bf16 weights directly from
	// safetensors of any dtype; a bf16 checkpoint loads bit for bit.
	// Without it a LoRA base is fp32, as for full fine-tuning.
	FrozenBF16 bool
	// CheckpointEvery k > 1 (with Recompute) cuts the layers into segments
	// of at most k layers, keeps only the residual streams entering them,
	// and runs each segment's layers forward once more in the backward
	// pass: B residual buffers of (N,C) instead of L+1 where L ≤ B+B+(B-1)
	// +…+3 (5 for 16 layers, 7 for 32), for one more forward pass of most
	// layers (checkpoint.go). Fit turns it on (CheckpointSpacing) when
	// nothing else fits.
	CheckpointEvery int
	// KeepAttention (with Recompute) keeps each layer's attention output
	// and log-sum-exp, (N,QD) and (B,NH,T) floats a layer, so the
	// recomputation skips the attention, two of its T² products; with
	// CheckpointEvery only a segment's layers' (keepatt.go). Fit turns it
	// on with Recompute where it fits.
	KeepAttention bool
	// KeepAttentionLayers k > 0 (with KeepAttention) keeps only k slots
	// of attention outputs, which the layers take in turn, so that the
	// last k layers (with CheckpointEvery, about k-1 of each segment's)
	// skip the attention's recomputation: k-1 slots' memory more than
	// plain recomputation, whose att and lse take a slot's (keepatt.go).
	// 0 keeps them all. Fit lowers it to the most that fit.
	KeepAttentionLayers int
	// MLPChunk (with Recompute, dense models) is how many token rows the
	// MLP works on at once: its (rows, intermediate) buffers then do not
	// grow with the context. Default DefaultMLPChunk.
	MLPChunk int
	// LoRA, when set, is the adapter that will be attached for training: the
	// base is frozen from the start, so New allocates no base gradients, and
	// MemoryEstimate and Fit count the adapter's weights, gradients, AdamW
	// moments and scratch. New does not create the adapter (NewAdapter).
	LoRA *LoRAConfig
	// QuantizeBase "nf4" holds the base's layer matrices only in NF4
	// (QLoRA; see nf4.go), dequantized a layer at a time as the layer
	// runs: about 0.53 bytes a weight. Like FrozenBF16 the base is frozen
	// and cannot be saved, merged into or decoded; with BF16 the layers
	// compute in bf16, else in fp32 on the dequantized values. Only Llama
	// and Mistral models (Config.CheckQuantizeBase).
	QuantizeBase string
	// NF4SingleScale keeps the NF4 blocks' absmax scales in fp32 instead
	// of QLoRA's double quantization (8-bit scales in blocks of 256).
	NF4SingleScale bool
	// NF4Embeddings (with QuantizeBase) holds the token embeddings and the
	// output head in NF4 too, where QLoRA keeps them unquantized: the
	// looked-up rows dequantized, the head a tile of NF4HeadRows rows at a
	// time inside its products (nf4embed.go).
	NF4Embeddings bool
	// NF4HeadRows is the rows of those tiles; default DefaultNF4HeadRows.
	NF4HeadRows int
	// OptimizerStates is how many fp32 state buffers the optimizer keeps
	// per trained parameter, for MemoryEstimate and Fit: 2 for AdamW's
	// moments (also when 0), 1 for LionW's.
	OptimizerStates int
	// ShardRanks N > 0 shards the parameters over N ranks (ZeRO stage 3,
	// see sharded.go): the model holds one part's parameters and
	// gradients at a time (and the next part's parameters, prefetched),
	// which its Shards hooks gather and take; fp32
	// full fine-tuning of a config CheckShardable accepts only. For
	// MemoryEstimate and Fit the parameters, gradients and optimizer
	// state count 1/N. With LoRA the frozen base is sharded the same way
	// and takes no gradients; with QuantizeBase only its NF4 layers are,
	// a chunk of each layer's NF4 data a rank (nf4shard.go). With BF16 the
	// bf16 weights are converted part by part (New turns CompactBF16 on
	// and FrozenBF16 off).
	ShardRanks int
	// Rank, when set, plans one rank of a data-parallel run that shards
	// its state outside the model (dataparallel.Zero1Rank: ZeRO-1's AdamW
	// moments and exchange buffers): MemoryPlan, and so Fit, count that
	// rank's memory. The model does not read it.
	Rank RankPlanner
}

// A RankPlanner turns whole, a MemoryPlan of c with opt, into one
// rank's (Options.Rank).
type RankPlanner interface {
	RankPlan(c *Config, opt Options, whole MemoryPlan) MemoryPlan
}

// OptimizerBuffers is OptimizerStates with its default.
func (o Options) OptimizerBuffers() int64 {
	if o.OptimizerStates <= 0 {
		return 2
	}
	return int64(o.OptimizerStates)
}

// defaultLogitsBytes bounds the fp32 logits of a default loss chunk.
const defaultLogitsBytes = 128 << 20

// lossChunk is LossChunk, or its default for c when unset: 256 rows, more
// where the vocabulary is small (1024 at 32000 tokens). Fewer, larger
// chunks run the head's products on more rows per call, so its weights
// and gradient are read fewer times; with a 128k vocabulary the default
// stays 256.
func (o Options) lossChunk(c *Config) int {
	if o.LossChunk > 0 {
		return o.LossChunk
	}
	return max(256, defaultLogitsBytes/(4*max(c.VocabSize, 1))/256*256)
}

// frozenBase says the base takes no gradients, so none are allocated.
func (o Options) frozenBase() bool { return o.FrozenBF16 || o.LoRA != nil || o.QuantizeBase != "" }

// Model holds parameters, gradients and activation buffers for one config.
type Model struct {
	Config *Config
	Dev    Device
	Opt    Options

	// Params is an arena of NumParams floats; with FrozenBF16 it holds only
	// the norms and biases (vectorSpecs) and the matrices live in w16.
	Params *Weights
	// Grads has Params' layout; with a frozen base (FrozenBF16 or LoRA) it
	// holds only the norms' and biases' gradients, which the frozen
	// backward pass computes on the way and nothing uses.
	Grads *Weights
	// LayerBackwardDone, when set, is called after the backward pass of
	// decoder layer l has added its last contribution to l's parameter
	// gradients (Grads, or the attached adapter's), from the goroutine
	// running ForwardBackward; data parallelism starts reducing them
	// while the earlier layers' backward runs.
	LayerBackwardDone func(l int)
	// HeadBackwardDone, when set, is called like LayerBackwardDone once
	// the backward pass has finished the gradients after the decoder
	// layers in the arena (the final norm and an untied output head),
	// before the layers' backward starts.
	HeadBackwardDone func()
	// Shards gathers and releases the parts of a model with sharded
	// parameters (Options.ShardRanks); it must be set before the model
	// runs.
	Shards ShardHooks
	shard  shardState // a sharded model's gather buffers (sharded.go)
	// gnorm is the gradient norm fused into the backward pass (FuseGradNorm).
	gnorm gradNorm
	// gradFresh: the pass under way writes the gradients of the weight
	// products instead of adding to them (OverwriteGrads); overwrite is
	// the arena's other ranges, which OverwriteGrads zeroes.
	gradFresh bool
	overwrite [][2]int
	// In BF16 mode matrix products read bf16 weights. w16 is a bf16 copy of
	// all of Params, which the optimizer refreshes as it updates them (with
	// FrozenBF16 it is the only copy of the matrices). With
	// CompactBF16, w16 is nil: lm16 holds the output head and layer16 one
	// decoder layer (layer16Of, -1 for none), converted when needed.
	// w16Stale marks the copies out of date (see ParamsChanged).
	bf16      bool
	w16       *WeightSet[uint16]
	lm16      []uint16
	layer16   Layer[uint16]
	layer16b  []uint16 // the buffer layer16 views
	layer16Of int
	w16Stale  bool
	// dec16 is the bf16 weight copy of DecodeBF16 when w16 is nil, made on
	// first use; dec16Stale marks it out of date.
	dec16      *WeightSet[uint16]
	dec16Stale bool

	ropeCos, ropeSin []float32 // (maxPos, HD/2)
	acts             *activations
	lora             *Adapter  // attached LoRA adapter (see Attach); nil for full fine-tuning
	ownedLoRA        *Adapter  // the adapter LoadWithAdapter attached: Close closes it
	nf4              *nf4Base  // the quantized matrices of a frozen NF4 base (Options.QuantizeBase)
	step             stepBufs  // DecodeStep's buffers
	recomputing      bool      // the backward pass is recomputing a layer's forward
	stepHost         []float32 // DecodeStep's logits on the host

	quant map[*float32]quantMatrix // weights decoding reads quantized (quant.go)
}

// acts for one micro-batch shape; reallocated only when B*T grows.
type activations struct {
	n       int
	res     [][]float32 // L+1 x (N,C): residual stream entering each layer, and leaving the last (in resBufs)
	resBufs [][]float32 // the distinct buffers of res: fewer with checkpoints (Options.CheckpointEvery, checkpoint.go)
	layer   []layerActs // L entries, or one shared entry when recomputing
	lnf     []float32   // (chunk,C) final norm output of one loss chunk (head)
	rstdf   []float32   // (N)
	logits  []float32   // (chunk,V)
	scr     scratch
	// mlpShared: every layer's h is scr.dgate's buffer and its ln2
	// scr.dq's, recomputed in the backward pass (Options.shareMLPInputs).
	mlpShared bool
	a16       []uint16 // bf16 casts of matmul operands (BF16 mode only)
	b16       []uint16
	// The batch on the device: (N) token ids, targets, rotary positions
	// and document starts, uploaded from the host Batch by prepare.
	ids, targets, pos, docStart []int32
	// Mixtral (moe.go): each layer's routing (host), shared scratch, and
	// the load-balancing loss's gradient per expert probability.
	routes  []moeRoute
	moe     moeScratch
	auxGrad []float64
	// With slots (keepatt.go) the shared entry's att and lse are one of
	// kept; keptOf is each layer's slot.
	kept   []keptAttention
	keptOf []int
}

// ln1 and att share one buffer (N, max(C,QD)): ln1 is dead once q, k and
// v are computed, before the attention writes att, and layerBackward
// recomputes it (the same norm of the same input) once att is dead. An
// att kept in a slot (keepatt.go: with recomputation, but for plain
// recomputation with checkpoints) outlives the recomputation, so the
// forward passes put ln1 in mid's buffer (dead until the output
// projection) and the backward pass in the kept att's (ln1b). With the
// MLP in chunks, ln2 holds one chunk's rows, normalised chunk by chunk as
// the MLP runs (mlpchunk.go).
type layerActs struct {
	ln1, rstd1 []float32 // (N,C) (N); ln1 is att's buffer (mid's with a kept slot)
	ln1b       []float32 // (N,C) ln1 normalised again in the backward pass: ln1, or with a kept slot its att's buffer
	q, k, v    []float32 // (N,QD) (N,KVD) (N,KVD), after RoPE
	att, lse   []float32 // (N,QD) (B,NH,T)
	mid        []float32 // (N,C) residual after attention; with Recompute (N, max(C,QD)), scr.dq's buffer too
	ln2, rstd2 []float32 // (rows,C) (N): rows N, or the MLP's chunk
	gate, up   []float32 // (N,F), (NK,F) with experts
	h          []float32 // (N,F) silu(gate)*up, (NK,F) with experts
	moe        moeActs
}

// scratch buffers for the backward pass, shared by all layers. datt
// shares dln's buffer (N, max(C,QD)): the attention branch's backward
// reads dln's last value (the norm's backward) before datt is written, and
// writes dln afresh only once datt is dead. With Recompute dq is the one
// layer's mid buffer, dead from the second norm's backward until the next
// layer's recomputation (dqShared).
type scratch struct {
	dqShared         bool
	dres, dln        []float32 // (N,C)
	dq, dk, dv, datt []float32 // (N,QD) (N,KVD) (N,KVD) (N,QD)
	dgate, dup, dh   []float32 // (N,F), (NK,F) with experts
}

// New allocates a model with zeroed parameters and gradients on dev.
func New(c *Config, dev Device, opt Options) *Model {
	opt.LossChunk = opt.lossChunk(c)
	if opt.FrozenBF16 {
		opt.BF16, opt.CompactBF16 = true, false
	}
	if opt.QuantizeBase != "" {
		opt.FrozenBF16, opt.CompactBF16 = opt.BF16, false
		return newNF4(c, dev, opt)
	}
	if opt.ShardRanks > 0 { // bf16 weights are converted part by part as they are gathered
		opt.FrozenBF16, opt.CompactBF16 = false, opt.BF16
	}
	n := int(c.NumParams())
	m := &Model{Config: c, Dev: dev, Opt: opt}
	m.bf16, m.w16Stale, m.layer16Of = opt.BF16, !opt.FrozenBF16, -1
	vectors := func() *Weights { v := c.vectorSpecs(); return weightSetOf(c, v, dev.Alloc(specsSize(v))) }
	if opt.ShardRanks > 0 {
		m.shard = newShardState(c, dev, opt.ShardRanks, opt.LoRA != nil)
		m.Params, m.Grads = m.shard.params[0], m.shard.grads[0]
	} else if opt.FrozenBF16 {
		m.Params = vectors()
	} else {
		m.Params = NewWeights(c, dev.Alloc(n))
	}
	switch {
	case opt.ShardRanks > 0: // allocated with Params
	case opt.frozenBase():
		m.Grads = vectors()
	default:
		m.Grads = NewWeights(c, dev.Alloc(n))
	}
	switch {
	case opt.BF16 && opt.CompactBF16:
		m.lm16 = dev.AllocBF16(c.VocabSize * c.HiddenSize)
		lo, hi := c.layerRange(0)
		m.layer16b = dev.AllocBF16(hi - lo)
		m.layer16 = oneLayerViews(c, m.layer16b)
	case opt.BF16: // with FrozenBF16, the only copy of the matrices
		m.w16 = newWeightSet(c, dev.AllocBF16(n))
	}
	return m
}

// prepare sizes the buffers for bt and uploads it to the device.
func (m *Model) prepare(bt *Batch) {
	m.ensure(bt.B, bt.T)
	a, N := m.acts, bt.B*bt.T
	m.Dev.UploadInt32(a.ids[:N], bt.IDs)
	m.Dev.UploadInt32(a.targets[:N], bt.Targets)
	m.Dev.UploadInt32(a.pos[:N], bt.Pos)
	m.Dev.UploadInt32(a.docStart[:N], bt.DocStart)
}

// ensure sizes activation buffers and rotary tables for a batch; buffers
// for a smaller batch are freed and replaced.
func (m *Model) ensure(B, T int) {
	if len(m.ropeCos) < T*m.Config.HeadDim/2 {
		m.buildRope(T)
	}
	N := B * T
	if m.acts != nil && m.acts.n >= N {
		return
	}
	m.freeActs()
	m.acts = m.allocActs(N)
}

// allocActs allocates the activations and scratch of N tokens.
func (m *Model) allocActs(N int) *activations {
	c, d := m.Config, m.Dev
	C, F, QD, KVD := c.HiddenSize, c.IntermediateSize, c.QDim(), c.KVDim()
	NF := c.routedRows(m.Opt.mlpRows(c, N)) * F
	a := &activations{n: N}
	a.resBufs = make([][]float32, m.Opt.residualBuffers(c))
	for i := range a.resBufs {
		a.resBufs[i] = d.Alloc(N * C)
	}
	a.res = make([][]float32, c.NumHiddenLayers+1)
	a.forwardSlots(m.Opt, c)
	nl := c.NumHiddenLayers
	if m.Opt.Recompute {
		nl = 1
	}
	a.layer = make([]layerActs, nl)
	W := max(C, QD)
	midW := C
	if m.Opt.Recompute {
		midW = W
	}
	a.mlpShared = m.Opt.shareMLPInputs(c)
	a.allocKept(d, m.Opt, c, N)
	for i := range a.layer {
		a.layer[i] = layerActs{
			rstd1: d.Alloc(N),
			q:     d.Alloc(N * QD), k: d.Alloc(N * KVD), v: d.Alloc(N * KVD),
			mid: d.Alloc(N * midW)[:N*C], rstd2: d.Alloc(N),
			gate: d.Alloc(NF), up: d.Alloc(NF),
		}
		if a.kept != nil { // att and lse are the layer's slot's (layerActs)
			a.layer[i].ln1 = a.layer[i].mid
		} else {
			att := d.Alloc(N * W)
			a.layer[i].ln1, a.layer[i].att, a.layer[i].lse = att[:N*C], att[:N*QD], d.Alloc(N*c.NumAttentionHeads)
			a.layer[i].ln1b = a.layer[i].ln1
		}
		if !a.mlpShared {
			a.layer[i].ln2, a.layer[i].h = d.Alloc(m.Opt.mlpRows(c, N)*C), d.Alloc(NF)
		}
		if c.MoE() {
			a.layer[i].moe = allocMoEActs(d, c, N)
		}
	}
	if c.MoE() {
		a.moe, a.routes = allocMoEScratch(d, c, N), make([]moeRoute, c.NumHiddenLayers)
	}
	a.lnf, a.rstdf = d.Alloc(min(m.Opt.LossChunk, N)*C), d.Alloc(N)
	a.logits = d.Alloc(min(m.Opt.LossChunk, N) * c.VocabSize)
	dln := d.Alloc(N * W)
	a.scr = scratch{
		dres: d.Alloc(N * C), dln: dln[:N*C],
		dk: d.Alloc(N * KVD), dv: d.Alloc(N * KVD), datt: dln[:N*QD],
		dgate: d.Alloc(NF), dup: d.Alloc(NF), dh: d.Alloc(NF),
	}
	if m.Opt.Recompute {
		a.scr.dq, a.scr.dqShared = a.layer[0].mid[:N*QD], true
	} else {
		a.scr.dq = d.Alloc(N * QD)
	}
	if a.mlpShared {
		for i := range a.layer {
			a.layer[i].ln2, a.layer[i].h = a.scr.dq[:N*C], a.scr.dgate
		}
	}
	if m.Opt.BF16 {
		chunk, rows := min(m.Opt.LossChunk, N), m.Opt.mlpRows(c, N)
		a.a16, a.b16 = d.AllocBF16(c.bf16Scratch(N, m.Opt.headGradChunk(chunk), rows, !m.Opt.frozenBase())), d.AllocBF16(c.bf16ScratchB(m.Opt, N, chunk, rows))
	}
	a.ids, a.targets, a.pos, a.docStart = d.AllocInt32(N), d.AllocInt32(N), d.AllocInt32(N), d.AllocInt32(N)
	return a
}

// freeActs releases the activation buffers, if any.
func (m *Model) freeActs() {
	a, d := m.acts, m.Dev
	if a == nil {
		return
	}
	for _, x := range a.resBufs {
		d.Free(x)
	}
	for _, la := range a.layer { // ln1 is att's buffer, or mid's
		freeAll(d, la.rstd1, la.q, la.k, la.v, la.mid, la.rstd2, la.gate, la.up)
		if a.kept == nil { // else att and lse are a slot's
			freeAll(d, la.att, la.lse)
		}
		if !a.mlpShared {
			freeAll(d, la.ln2, la.h)
		}
		la.moe.free(d)
	}
	a.moe.free(d)
	a.freeKept(d)
	s := a.scr
	// datt is dln's buffer, which may be the longer of the two.
	dln := s.dln
	if len(s.datt) > len(dln) {
		dln = s.datt
	}
	if !s.dqShared {
		d.Free(s.dq)
	}
	freeAll(d, a.lnf, a.rstdf, a.logits, s.dres, dln, s.dk, s.dv, s.dgate, s.dup, s.dh)
	if a.a16 != nil {
		d.FreeBF16(a.a16)
		d.FreeBF16(a.b16)
	}
	for _, x := range [][]int32{a.ids, a.targets, a.pos, a.docStart} {
		d.FreeInt32(x)
	}
	m.acts = nil
}

// freeAll frees the buffers xs that were allocated (nil ones were not:
// e.g. the rope tables of a model that never ran).
func freeAll(d Device, xs ...[]float32) {
	for _, x := range xs {
		if x != nil {
			d.Free(x)
		}
	}
}

// Close releases every device buffer of the model. The model must not be
// used afterwards.
func (m *Model) Close() {
	d := m.Dev
	m.freeActs()
	m.step.free(d)
	if m.sharded() && m.nf4 == nil {
		freeAll(d, m.shard.buffers()...)
	} else {
		freeAll(d, m.Params.Arena, m.Grads.Arena)
	}
	freeAll(d, m.ropeCos, m.ropeSin)
	for _, x := range [][]uint16{m.lm16, m.layer16b} {
		if x != nil {
			d.FreeBF16(x)
		}
	}
	if m.w16 != nil {
		d.FreeBF16(m.w16.Arena)
	}
	if m.dec16 != nil {
		d.FreeBF16(m.dec16.Arena)
	}
	if m.ownedLoRA != nil {
		m.ownedLoRA.Close()
	}
	m.freeNF4()
	*m = Model{Config: m.Config, Dev: d, Opt: m.Opt}
}

// buildRope fills the cos/sin tables for positions [0, T) from the
// config's (scaled) inverse frequencies, computed in float64 on the host.
func (m *Model) buildRope(T int) {
	inv := m.Config.InvFreq()
	half := len(inv)
	cos, sin := make([]float32, T*half), make([]float32, T*half)
	for p := 0; p < T; p++ {
		for i, f := range inv {
			s, c := math.Sincos(float64(p) * f)
			cos[p*half+i], sin[p*half+i] = float32(c), float32(s)
		}
	}
	if m.ropeCos != nil {
		freeAll(m.Dev, m.ropeCos, m.ropeSin)
	}
	m.ropeCos, m.ropeSin = m.Dev.Alloc(T*half), m.Dev.Alloc(T*half)
	m.Dev.Upload(m.ropeCos, cos)
	m.Dev.Upload(m.ropeSin, sin)
}

func (m *Model) layerActs(l int) *layerActs {
	a := m.acts
	if !m.Opt.Recompute {
		return &a.layer[l]
	}
	la := &a.layer[0]
	if s := a.keptFor(l); s != nil {
		la.att, la.lse, la.ln1b = s.att, s.lse, s.buf[:len(la.ln1)]
	}
	return la
}

// cast rounds x to bf16 into dst in BF16 mode; in fp32 mode it returns nil
// and matmul uses the fp32 operands.
func (m *Model) cast(dst []uint16, x []float32) []uint16 {
	if !m.bf16 {
		return nil
	}
	dst = dst[:len(x)]
	m.Dev.ToBF16(dst, x)
	return dst
}

// buf16 is the first n values of buf in BF16 mode, nil in fp32 mode.
func (m *Model) buf16(buf []uint16, n int) []uint16 {
	if !m.bf16 {
		return nil
	}
	return buf[:n]
}

// matmul is Device.MatMul, or MatMulBF16 on the bf16 operands in BF16 mode.
func (m *Model) matmul(c, a []float32, a16 []uint16, b []float32, b16 []uint16, M, N, K int, f MatMulFlags) {
	if m.bf16 {
		m.Dev.MatMulBF16(c, a16, b16, M, N, K, f)
		return
	}
	m.Dev.MatMul(c, a, b, M, N, K, f)
}

// The matrix products of the layers, named.
var (
	// xWt: y = x·Wᵀ for a row-major weight W(out,in) (a linear layer).
	xWt = MatMulFlags{TransB: true}
	// dyW: dx = dy·W (a linear layer's input gradient).
	dyW = MatMulFlags{}
	// dytX: dW += dyᵀ·x (a linear layer's weight gradient, accumulated).
	dytX = MatMulFlags{TransA: true, Acc: true}
)

// output says whether a layer overwrites its output or adds into it (the
// residual adds fused into projections, gradients summed over branches).
type output bool

const (
	overwrite  output = false
	accumulate output = true
)

// linear computes y(N,out) = x(N,in) · W(out,in)ᵀ (+ b), overwriting y or
// adding to it. x16 and w16 are the bf16 forms (nil in fp32 mode).
func (m *Model) linear(y, x []float32, x16 []uint16, w []float32, w16 []uint16, b []float32, n, in, out int, o output) {
	m.matmul(y, x, x16, w, w16, n, out, in, MatMulFlags{TransB: true, Acc: bool(o)})
	if b != nil {
		m.Dev.AddBias(y, b, n, out)
	}
}

// linearBackward writes (or, with accumulate, adds) dx(N,in) = dy·W when
// dx is non-nil, and adds dW += dyᵀ·x and db += colsum(dy) unless the base
// weights are frozen.
func (m *Model) linearBackward(dx, dw, db, dy, x, w []float32, w16 []uint16, n, in, out int, o output) {
	m.linearBackward16(dx, dw, db, dy, nil, x, nil, w, w16, n, in, out, o)
}

// linearBackward16 is linearBackward given the bf16 casts of dy and x
// where a kernel already wrote them (nil: cast here, dy into a16 and x into
// b16). It returns x's cast, which the next product reading the same x
// (q, k and v from ln1; gate and up from ln2) passes back instead of
// casting x again; it stays valid while nothing else writes b16.
func (m *Model) linearBackward16(dx, dw, db, dy []float32, dy16 []uint16, x []float32, x16 []uint16, w []float32, w16 []uint16, n, in, out int, o output) []uint16 {
	a := m.acts
	if dy16 == nil {
		dy16 = m.cast(a.a16, dy[:n*out])
	}
	if dx != nil {
		m.matmul(dx, dy, dy16, w, w16, n, in, out, MatMulFlags{Acc: bool(o)})
	}
	if m.frozen() {
		return x16
	}
	if x16 == nil {
		x16 = m.cast(a.b16, x[:n*in])
	}
	m.matmul(dw, dy, dy16, x, x16, out, in, n, m.gradProduct())
	if db != nil {
		m.Dev.BiasBackward(db, dy, n, out)
	}
	return x16
}

// swigluBackward is SwiGLUBackward of n values, writing dgate's and dup's
// bf16 casts in the same pass when training a full model in BF16 mode, and
// returns those casts: both in a16 (bf16Scratch's pair), as b16 takes ln2's
// cast for the weight gradients. Then, without MLP biases, the products
// read only the casts and the fp32 dgate, dup are not written. A frozen
// base's scratch has no room for the pair (nil: linearBackward16 casts
// each).
func (m *Model) swigluBackward(dgate, dup, dh, gate, up []float32, n int) (dgate16, dup16 []uint16) {
	if m.bf16 && !m.frozen() && !m.Opt.frozenBase() {
		dgate16, dup16 = m.acts.a16[:n], m.acts.a16[n:2*n]
		if !m.Config.MLPBias {
			dgate, dup = nil, nil
		}
	}
	if dgate != nil {
		dgate, dup = dgate[:n], dup[:n]
	}
	m.Dev.SwiGLUBackward(dgate, dup, dgate16, dup16, dh[:n], gate[:n], up[:n], n)
	return dgate16, dup16
}

// w16Layer is layer l's bf16 weights (converted now in compact mode), or
// an empty Layer in fp32 mode.
func (m *Model) w16Layer(l int) *Layer[uint16] {
	switch {
	case m.nf4 != nil && m.bf16:
		return m.nf4Layer16(l)
	case m.nf4 != nil:
		return &Layer[uint16]{}
	case m.w16 != nil:
		return &m.w16.Layers[l]
	case m.bf16:
		if m.layer16Of != l {
			lo, hi := m.Config.layerRange(l)
			if m.sharded() { // the gathered layer sits at the start of its gather buffer (Params')
				lo, hi = 0, hi-lo
			}
			src := m.Params.Arena[lo:hi]
			m.Dev.ToBF16(m.layer16b, src)
			m.layer16Of = l
		}
		return &m.layer16
	}
	return &Layer[uint16]{}
}

// lmHead16 is the output head's bf16 weights (nil in fp32 mode).
func (m *Model) lmHead16() []uint16 {
	switch {
	case m.w16 != nil:
		return m.w16.LMHead
	case m.bf16:
		return m.lm16
	}
	return nil
}

// refresh16 brings stale bf16 weight copies up to date.
func (m *Model) refresh16() {
	if !m.w16Stale || m.sharded() { // a sharded model converts as it gathers
		return
	}
	switch {
	case m.w16 != nil:
		m.Dev.ToBF16(m.w16.Arena, m.Params.Arena)
	case m.bf16:
		m.Dev.ToBF16(m.lm16, m.Params.LMHead)
		m.layer16Of = -1
	}
	m.w16Stale = false
}

// layerForward runs decoder layer l from res[l] into res[l+1].
func (m *Model) layerForward(l int, bt *Batch) {
	c, d, a := m.Config, m.Dev, m.acts
	p, h, la := m.layerParams(l), m.w16Layer(l), m.layerActs(l)
	N, C, F, QD, KVD := bt.B*bt.T, c.HiddenSize, c.IntermediateSize, c.QDim(), c.KVDim()
	eps := float32(c.RMSNormEps)
	in, out := a.res[l][:N*C], a.res[l+1][:N*C]
	if m.recomputing {
		// The output is known; its buffer may hold another stream now
		// (checkpoint.go). dln is dead until this layer's backward.
		out = a.scr.dln[:N*C]
	}

	x16 := m.buf16(a.a16, N*C) // the norms and SwiGLU write their outputs' bf16 casts here
	m.norm(la.ln1, x16, la.rstd1, in, p.LN1, N, C, eps)
	m.linear(la.q, la.ln1, x16, p.WQ, h.WQ, p.BQ, N, C, QD, overwrite)
	m.linear(la.k, la.ln1, x16, p.WK, h.WK, p.BK, N, C, KVD, overwrite)
	m.linear(la.v, la.ln1, x16, p.WV, h.WV, p.BV, N, C, KVD, overwrite)
	m.adaptQKV(l, la.q, la.k, la.v, la.ln1, N)
	m.clipQKV(la.q, la.k, la.v, N)
	d.RoPE(la.q, a.pos, m.ropeCos, m.ropeSin, N, c.NumAttentionHeads, c.HeadDim)
	d.RoPE(la.k, a.pos, m.ropeCos, m.ropeSin, N, c.NumKeyValueHeads, c.HeadDim)
	if s := a.keptFor(l); s == nil || s.layer != l { // else att and lse are kept from a forward pass over this batch (keepatt.go)
		m.attention(la.att, la.lse, la.q, la.k, la.v, a.docStart, bt.B, bt.T)
		if s != nil {
			s.layer = l
		}
	}
	// The residual add is fused into the projection: mid = in + att·Woᵀ.
	d.Copy(la.mid[:N*C], in)
	m.linear(la.mid, la.att, m.cast(a.a16, la.att[:N*QD]), p.WO, h.WO, p.BO, N, QD, C, accumulate)
	m.adapt(l, projO, la.mid, la.att, N)

	if m.mlpChunked(la, N) { // ln2 too is normalised chunk by chunk
		if !m.recomputing {
			d.Copy(out, la.mid[:N*C])
		}
		m.mlpChunkForward(l, p, h, la, out, N)
		return
	}
	x16 = m.buf16(a.a16, N*C)
	m.norm(la.ln2, x16, la.rstd2, la.mid, p.LN2, N, C, eps)
	if c.MoE() {
		d.Copy(out, la.mid[:N*C])
		m.moeForward(l, la, x16, out, N)
		return
	}
	m.linear(la.gate, la.ln2, x16, p.WGate, h.WGate, p.BGate, N, C, F, overwrite)
	m.linear(la.up, la.ln2, x16, p.WUp, h.WUp, p.BUp, N, C, F, overwrite)
	m.adapt(l, projGate, la.gate, la.ln2, N)
	m.adapt(l, projUp, la.up, la.ln2, N)
	h16 := m.buf16(a.a16, N*F)
	d.SwiGLU(la.h, h16, la.gate, la.up, N*F)
	d.Copy(out, la.mid[:N*C])
	m.linear(out, la.h, h16, p.WDown, h.WDown, p.BDown, N, F, C, accumulate)
	m.adapt(l, projDown, out, la.h, N)
}

// layerBackward propagates scr.dres (the gradient w.r.t. res[l+1]) back to
// res[l] in place, adding parameter gradients into m.Grads.
func (m *Model) layerBackward(l int, bt *Batch) {
	c, d, a := m.Config, m.Dev, m.acts
	p, h, g, la, s := m.layerParams(l), m.w16Layer(l), &m.Grads.Layers[l], m.layerActs(l), &a.scr
	N, C, F, QD, KVD := bt.B*bt.T, c.HiddenSize, c.IntermediateSize, c.QDim(), c.KVDim()
	dres := s.dres[:N*C]

	// MLP branch: out = mid + down(silu(gate(ln2)) * up(ln2)), or the
	// mixture of such experts.
	if c.MoE() {
		m.moeBackward(l, la, dres, N)
	} else if m.mlpChunked(la, N) {
		m.mlpChunkBackward(l, p, h, g, la, dres, N)
	} else {
		if a.mlpShared { // h again, into dgate's buffer (dead until the SwiGLU's backward): the same kernel on the same input
			d.SwiGLU(la.h, nil, la.gate, la.up, N*F)
		}
		m.linearBackward(s.dh, g.WDown, g.BDown, dres, la.h, p.WDown, h.WDown, N, F, C, overwrite)
		m.adaptBackward(l, projDown, s.dh, dres, la.h, N)
		dg16, du16 := m.swigluBackward(s.dgate, s.dup, s.dh, la.gate, la.up, N*F)
		x16 := m.linearBackward16(s.dln, g.WGate, g.BGate, s.dgate, dg16, la.ln2, nil, p.WGate, h.WGate, N, C, F, overwrite)
		m.linearBackward16(s.dln, g.WUp, g.BUp, s.dup, du16, la.ln2, x16, p.WUp, h.WUp, N, C, F, accumulate)
		if a.mlpShared { // ln2 again, into dq's buffer (dead until the attention's backward)
			m.norm(la.ln2, nil, la.rstd2, la.mid, p.LN2, N, C, float32(c.RMSNormEps))
		}
		m.adaptBackward(l, projGate, s.dln, s.dgate, la.ln2, N)
		m.adaptBackward(l, projUp, s.dln, s.dup, la.ln2, N)
	}
	dres16 := m.buf16(a.a16, N*C) // the output projection's dy, cast as the norm's backward writes it
	m.normBackward(dres, dres16, g.LN2, s.dln, la.mid, p.LN2, la.rstd2, N, C)

	// Attention branch: mid = in + o(attn(rope(q(ln1)), rope(k(ln1)), v(ln1))).
	// mid is dead from here (dq may be its buffer), dln until the q, k, v
	// projections' backward (datt is its buffer), att after the attention's.
	m.linearBackward16(s.datt, g.WO, g.BO, dres, dres16, la.att, nil, p.WO, h.WO, N, QD, C, overwrite)
	m.adaptBackward(l, projO, s.datt, dres, la.att, N)
	m.attentionBackward(s.dq, s.dk, s.dv, s.datt, la.att, la.lse, la.q, la.k, la.v, a.docStart, bt.B, bt.T)
	d.RoPEBackward(s.dq, a.pos, m.ropeCos, m.ropeSin, N, c.NumAttentionHeads, c.HeadDim)
	d.RoPEBackward(s.dk, a.pos, m.ropeCos, m.ropeSin, N, c.NumKeyValueHeads, c.HeadDim)
	// ln1 again, into att's buffer: the same kernel on the same input. It
	// writes the cast the q, k, v weight gradients read into b16 as well.
	var ln16 []uint16
	if m.bf16 && !m.frozen() {
		ln16 = a.b16[:N*C]
	}
	if k := a.keptFor(l); k != nil { // its att is gone now
		k.layer = -1
	}
	m.norm(la.ln1b, ln16, la.rstd1, a.res[l][:N*C], p.LN1, N, C, float32(c.RMSNormEps))
	m.clipQKVBackward(l, la, s.dq, s.dk, s.dv, s.datt, N)
	x16 := m.linearBackward16(s.dln, g.WQ, g.BQ, s.dq, nil, la.ln1b, ln16, p.WQ, h.WQ, N, C, QD, overwrite)
	x16 = m.linearBackward16(s.dln, g.WK, g.BK, s.dk, nil, la.ln1b, x16, p.WK, h.WK, N, C, KVD, accumulate)
	m.linearBackward16(s.dln, g.WV, g.BV, s.dv, nil, la.ln1b, x16, p.WV, h.WV, N, C, KVD, accumulate)
	m.adaptQKVBackward(l, s.dln, s.dq, s.dk, s.dv, la.ln1b, N)
	m.normBackward(dres, nil, g.LN1, s.dln, a.res[l][:N*C], p.LN1, la.rstd1, N, C)
}

// embed writes the batch's token embeddings into res[0]; a sharded model
// gathers the embeddings around it (also when the backward pass embeds the
// batch again for the first checkpoint segment).
func (m *Model) embed(bt *Batch) {
	c, a := m.Config, m.acts
	N, C := bt.B*bt.T, c.HiddenSize
	if m.nf4Head() { // the embeddings are NF4 too
		m.nf4Embed(a.res[0][:N*C], bt.IDs[:N])
		return
	}
	m.gather(c.PartEmbed(), UseParams)
	if m.Opt.FrozenBF16 {
		m.Dev.EmbeddingBF16(a.res[0], a.ids, m.w16.Embed, N, C)
	} else {
		m.Dev.Embedding(a.res[0], a.ids, m.Params.Embed, N, C)
	}
	m.release(c.PartEmbed(), UseParams)
}

// forwardTrunk embeds the batch and runs every layer; the head runs the
// final norm. On a sharded model the head part (final norm and output
// head) is gathered at the end for headUse, for the head's loss chunks;
// the caller releases it.
func (m *Model) forwardTrunk(bt *Batch, headUse Use) {
	c := m.Config
	m.refresh16()
	m.acts.forgetKept()
	if m.sharded() {
		m.planShardPass(headUse&UseGrads != 0)
		if m.nf4 != nil {
			m.planNF4()
		}
	}
	m.embed(bt)
	for l := 0; l < c.NumHiddenLayers; l++ {
		m.gather(l, UseParams)
		m.layerForward(l, bt)
		m.release(l, UseParams)
	}
	m.gather(c.PartHead(), headUse)
}

// normF is the final norm of tokens s..s+n into lnf's first n rows (and
// their rstd): the head runs it a loss chunk at a time, so no (N,C) copy
// of the normalised stream exists. A sharded model has the head part
// gathered (forwardTrunk).
func (m *Model) normF(s, n int) []float32 {
	c, a := m.Config, m.acts
	C := c.HiddenSize
	x := a.lnf[:n*C]
	m.norm(x, nil, a.rstdf[s:s+n], a.res[c.NumHiddenLayers][s*C:(s+n)*C], m.Params.NormF, n, C, float32(c.RMSNormEps))
	return x
}

// Logits runs the forward pass and returns all logits (N,V) in host
// memory. It materialises the full matrix, so it is for tests and
// evaluation of short rows.
func (m *Model) Logits(bt *Batch) []float32 {
	m.prepare(bt)
	m.forwardTrunk(bt, UseParams)
	c := m.Config
	N := bt.B * bt.T
	dev := m.Dev.Alloc(N * c.VocabSize)
	defer m.Dev.Free(dev)
	V := c.VocabSize
	for s := 0; s < N; s += m.Opt.LossChunk {
		n := min(m.Opt.LossChunk, N-s)
		x := m.normF(s, n)
		m.headLogits(dev[s*V:(s+n)*V], x, m.cast(m.acts.a16, x), n)
	}
	m.release(c.PartHead(), UseParams)
	out := make([]float32, len(dev))
	m.Dev.Download(out, dev)
	return out
}

// Eval is the forward-only result on a batch.
type Eval struct {
	LossSum float64 // summed cross-entropy over scored positions
	Tokens  int     // scored positions
	Correct int     // scored positions whose arg-max logit is the target
}

// Evaluate runs the forward pass only (no gradients).
func (m *Model) Evaluate(bt *Batch) Eval {
	m.prepare(bt)
	m.forwardTrunk(bt, UseParams)
	sum, correct := m.head(bt, 0, false)
	m.release(m.Config.PartHead(), UseParams)
	return Eval{LossSum: sum, Tokens: bt.Scored(), Correct: correct}
}

// head runs lm_head and the cross-entropy in chunks of tokens. With grad it
// also back-propagates scale·d(loss sum) into the lm_head gradient and into
// scr.dln (overwritten) as the gradient w.r.t. the final norm's output.
func (m *Model) head(bt *Batch, scale float32, grad bool) (float64, int) {
	c, d, a := m.Config, m.Dev, m.acts
	N, C, V := bt.B*bt.T, c.HiddenSize, c.VocabSize
	var total float64
	var correct int
	fresh := m.gradFresh && grad // the first scored chunk overwrites the head's gradient
	for s := 0; s < N; s += m.Opt.LossChunk {
		n := min(m.Opt.LossChunk, N-s)
		x := m.normF(s, n) // every chunk's: the norm's backward reads every row's rstd
		logits := a.logits[:n*V]
		scored := anyScored(bt.Targets[s : s+n])
		if !scored {
			if grad {
				d.Zero(a.scr.dln[s*C : (s+n)*C])
			}
			continue
		}
		x16 := m.cast(a.b16, x)
		m.headLogits(logits, x, x16, n)
		targets := a.targets[s : s+n]
		if !grad {
			l, c := d.CrossEntropy(nil, nil, logits, targets, n, V, 0)
			total, correct = total+l, correct+c
			continue
		}
		// In BF16 mode the gradient is written only in bf16, for the two
		// products below; logits then holds scratch. An NF4 head reads it
		// in fp32 (headGrad16).
		var dl16 []uint16
		if m.headGrad16() {
			dl16 = a.a16[:n*V]
		}
		l, c := d.CrossEntropy(logits, dl16, logits, targets, n, V, scale)
		total, correct = total+l, correct+c
		m.headInputGrad(a.scr.dln[s*C:(s+n)*C], logits, dl16, n)
		if !m.frozen() {
			f := dytX
			f.Acc = !fresh
			m.matmul(m.Grads.LMHead, logits, dl16, x, x16, V, C, n, f)
			fresh = false
		}
	}
	if fresh && !m.frozen() { // no scored chunk wrote it
		d.Zero(m.Grads.LMHead)
	}
	return total, correct
}

func anyScored(t []int32) bool {
	for _, v := range t {
		if v >= 0 {
			return true
		}
	}
	return false
}

// ForwardBackward runs one micro-batch and adds scale·d(loss sum)/dθ into
// m.Grads. With gradient accumulation, pass scale = 1/(scored tokens of the
// whole optimizer step) so the result is the per-token mean over the step,
// not a mean of per-micro-batch means. It returns the summed loss and the
// number of scored positions of this micro-batch.
func (m *Model) ForwardBackward(bt *Batch, scale float32) (sum float64, count int) {
	if m.Opt.frozenBase() && !m.frozen() {
		panic("engine: ForwardBackward on a model with a frozen base (Options.FrozenBF16 or LoRA) needs an attached adapter (Attach)")
	}
	m.prepare(bt)
	m.startGradNorm()
	c, d, a := m.Config, m.Dev, m.acts
	N, C := bt.B*bt.T, c.HiddenSize
	m.forwardTrunk(bt, UseParams|UseGrads)
	sum, _ = m.head(bt, scale, true)
	sum += m.routerAuxLoss(scale, bt.Scored())

	// Final norm: the head left d(lnf) in scr.dln.
	dres := a.scr.dres[:N*C]
	d.Zero(dres)
	m.normBackward(dres, nil, m.Grads.NormF, a.scr.dln[:N*C], a.res[c.NumHiddenLayers][:N*C], m.Params.NormF, a.rstdf, N, C)
	m.release(c.PartHead(), UseParams|UseGrads)
	if m.HeadBackwardDone != nil {
		m.HeadBackwardDone()
	}
	m.backwardLayers(bt)
	if !m.frozen() {
		m.gather(c.PartEmbed(), UseGrads)
		d.EmbeddingBackward(m.Grads.Embed, a.ids, dres, N, C)
		m.release(c.PartEmbed(), UseGrads)
	}
	m.gradFresh = false
	m.finishGradNorm()
	return sum, bt.Scored()
}

// ParamsChanged must be called after writing Params other than through
// LowPrecisionParams (loading, initialising, an optimizer step in compact
// mode), so BF16 mode refreshes its weight copies.
func (m *Model) ParamsChanged() {
	m.w16Stale = !m.Opt.FrozenBF16 // there w16 is the weights, not a copy
	m.dec16Stale = true
	m.layer16Of = -1
}

// LowPrecisionParams returns the bf16 weight copy for an optimizer to write
// as it updates Params; nil in fp32 and compact bf16 modes, where the
// optimizer calls ParamsChanged instead; nil with FrozenBF16, where the
// bf16 weights are the frozen base itself.
func (m *Model) LowPrecisionParams() []uint16 {
	if m.w16 == nil || m.Opt.FrozenBF16 {
		return nil
	}
	return m.w16.Arena
}

// ZeroGrad clears every gradient.
func (m *Model) ZeroGrad() {
	m.gnorm.valid = false
	m.Dev.Zero(m.Grads.Arena)
}

// GradNorm returns the global L2 norm of the gradients: the one the last
// backward pass computed when FuseGradNorm armed it, else a pass over them
// summing the same terms in the same order (gradnorm.go).
func (m *Model) GradNorm() float64 {
	if m.gnorm.valid {
		return math.Sqrt(m.gnorm.sq)
	}
	return math.Sqrt(m.gradSumSquares())
}

// CheckBatch verifies a batch fits the model's positional range.
func (m *Model) CheckBatch(bt *Batch) error {
	if bt.T > m.Config.MaxPositionEmbeddings {
		return fmt.Errorf("batch rows of %d tokens exceed max_position_embeddings %d", bt.T, m.Config.MaxPositionEmbeddings)
	}
	return nil
}
