package engine

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// MemoryEstimate returns the bytes a training model of this config needs on
// dev for micro-batches of B rows of T tokens: the total of MemoryPlan.
// It lets a run refuse at start-up instead of running out of memory on its
// first long batch an hour in. TestMemoryEstimateMatchesAllocations and
// TestLoRAMemoryEstimateMatchesAllocations hold it to what a counting
// device sees allocated.
func (c *Config) MemoryEstimate(dev Device, opt Options, B, T int) int64 {
	return c.MemoryPlan(dev, opt, B, T).PeakBytes
}

// MemoryPlan is where the bytes of training go at the peak (the end of a
// backward pass before the optimizer frees nothing), part by part.
type MemoryPlan struct {
	PeakBytes int64            `json:"peak_bytes"`
	Parts     map[string]int64 `json:"parts"`
}

// Parts of a MemoryPlan.
const (
	PartWeights          = "weights"           // parameters, their bf16 copies, the adapter's weights
	PartOptimizer        = "optimizer_state"   // AdamW moments
	PartGradients        = "gradients"         // gradients of whatever is trained (and a frozen base's norms)
	PartActivations      = "activations"       // per-layer activations kept for the backward pass and the working set
	PartAttentionScratch = "attention_scratch" // the device's own attention buffers
	PartLogitsChunk      = "logits_chunk"      // one chunk of lm_head output
	PartRope             = "rope_tables"       // cos and sin for T positions
	PartBatch            = "batch"             // token ids, targets, positions, document starts
	PartBF16Scratch      = "bf16_scratch"      // bf16 operands of the matmuls
	// A rank's collective buffers: a sharded optimizer's all-gather
	// scratch (dataparallel.Zero1Rank), and the receive buffer the Gloo
	// shim's reduce-scatter keeps between calls (the largest part;
	// collective/gloo), which a counting device does not see.
	PartExchangeScratch   = "exchange_scratch"
	PartCollectiveScratch = "collective_scratch"
)

// MemoryPlan returns MemoryEstimate's bytes part by part: parameters,
// gradients and AdamW moments (fp32), the bf16 weight copy in BF16 mode,
// activations, the batch, and the device's own attention scratch. With
// opt.LoRA it counts a frozen base (fp32, or bf16 only with FrozenBF16)
// without gradients or moments, and the adapter's weights, gradients,
// AdamW moments and scratch.
func (c *Config) MemoryPlan(dev Device, opt Options, B, T int) MemoryPlan {
	if opt.ShardRanks > 0 && opt.QuantizeBase == "" {
		// As New builds it: a sharded (LoRA) base is fp32 shards, its
		// gathered part converted to bf16 part by part, never held whole.
		opt.BF16 = opt.BF16 || opt.FrozenBF16
		opt.FrozenBF16, opt.CompactBF16 = false, opt.BF16
	}
	N := int64(B * T)
	parts := c.weightParts(opt)
	if opt.LoRA != nil {
		pa, _ := c.adapterSize(*opt.LoRA)
		r := int64(opt.LoRA.Rank)
		parts[PartWeights] += 4*pa + 4*r*r // params; scale matrix
		parts[PartGradients] += 4 * pa
		parts[PartOptimizer] += opt.OptimizerBuffers() * 4 * pa
		parts[PartActivations] += 4 * 3 * N * r // (N,r) scratch ×3
		if opt.LoRA.Dropout > 0 {               // the dropped input and its gradient, and the host mask
			parts[PartActivations] += 4 * 3 * int64(c.dropoutSize(*opt.LoRA, B*T, opt.mlpRows(c, B*T)))
		}
	}
	C, F, QD, KVD, V := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.QDim()), int64(c.KVDim()), int64(c.VocabSize)
	L, NH := int64(c.NumHiddenLayers), int64(c.NumAttentionHeads)
	NK := int64(c.routedRows(B * T))      // rows of the MoE's activations: only routed experts'
	R := int64(opt.mlpRows(c, B*T))       // rows of ln2 and the MLP's buffers: a chunk with recomputation
	NF := int64(c.routedRows(int(R))) * F // the MLP's buffers
	W, midW, dq := max(C, QD), C, QD      // att = ln1 and dln = datt take the wider; with recomputation, mid = dq too
	if opt.Recompute {
		midW, dq = W, 0
	}
	perLayer := N*(midW+W+QD+2*KVD+2+NH) + R*C + 3*NF // mid; att = ln1; q; k, v; rstd1, rstd2; lse; ln2; gate, up, h
	if opt.shareMLPInputs(c) {                        // ln2 and h live in the scratch dq and dgate
		perLayer -= R*C + NF
	}
	layers := L
	if opt.Recompute {
		layers = 1
	}
	if k := int64(opt.keptSlots(c)); k > 0 { // the shared entry's att = ln1 and lse are the slots' (keepatt.go)
		perLayer += (k - 1) * N * (W + NH)
	}
	chunk := min(int64(opt.lossChunk(c)), N)
	nres := opt.residualBuffers(c)
	// The residual streams; the final norm of one loss chunk and every
	// rstd; scratch dres, dln = datt, dq, dk, dv, dgate, dup, dh.
	acts := layers*perLayer + int64(nres)*N*C + chunk*C + N + N*(C+W+dq+2*KVD) + 3*NF
	ints := int64(0)
	if c.MoE() {
		E := int64(c.NumLocalExperts)
		acts += layers*NK*(1+C) + 2*NK*C + N*E + NK // per layer wt, y; scratch xg, dxg, router logits, dwt
		ints += layers * NK                         // per layer routed token ids
	}
	parts[PartActivations] += 4*acts + 4*ints
	parts[PartLogitsChunk] = 4 * chunk * V
	parts[PartRope] = 4 * int64(T) * int64(c.HeadDim) // rotary tables (T, HD/2) × 2
	parts[PartBatch] = 4 * 4 * N                      // ids, targets, positions, document starts
	parts[PartAttentionScratch] = AttentionScratchFor(dev, opt.BF16, B, T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
	if opt.BF16 || opt.FrozenBF16 {
		rows := opt.mlpRows(c, B*T)
		parts[PartBF16Scratch] = 2 * int64(c.bf16Scratch(B*T, opt.headGradChunk(int(chunk)), rows, !opt.frozenBase())+c.bf16ScratchB(opt, B*T, int(chunk), rows))
	}
	var total int64
	for _, b := range parts {
		total += b
	}
	if opt.Rank != nil {
		return opt.Rank.RankPlan(c, opt, MemoryPlan{PeakBytes: total, Parts: parts})
	}
	return MemoryPlan{PeakBytes: total, Parts: parts}
}

// weightParts is the base model's share of MemoryPlan: parameters, their
// bf16 copies, gradients and AdamW moments, as New and the optimizer
// allocate them for opt.
func (c *Config) weightParts(opt Options) map[string]int64 {
	P, vec := c.NumParams(), int64(specsSize(c.vectorSpecs()))
	parts := map[string]int64{PartWeights: 0, PartOptimizer: 0, PartGradients: 0, PartActivations: 0}
	if opt.QuantizeBase != "" { // NF4 matrices, the unquantized tensors, one layer's dequantized buffer; norm and bias gradients
		parts[PartGradients] = 4 * vec
		parts[PartWeights] = c.nf4WeightBytes(opt) - 4*vec
		return parts
	}
	if opt.FrozenBF16 { // bf16 matrices; fp32 norms and biases and their unused gradients
		parts[PartWeights] = 2*P + 4*vec
		parts[PartGradients] = 4 * vec
		return parts
	}
	if n := int64(opt.ShardRanks); n > 0 { // this rank's shards, and the gather buffers
		// The gather buffers: one any part fits in (anySlot), one for a
		// layer (the next part is prefetched into the other; sharded.go).
		shard, anySlot, chunk := c.shardSizes(n)
		slot := anySlot + int64(c.layerSlot(int(n)))
		parts[PartWeights] = 4*shard + 4*slot + 4*chunk // the last: a short chunk padded for the gather
		parts[PartGradients] = 4*shard + 4*slot
		parts[PartOptimizer] = opt.OptimizerBuffers() * 4 * shard
		parts[PartCollectiveScratch] = 4 * chunk // gradients are reduce-scattered a chunk a rank
		// A frozen base: one gradient buffer, for the norms' unused
		// gradients only, and nothing reduce-scattered.
		if opt.LoRA != nil {
			parts[PartGradients], parts[PartOptimizer], parts[PartCollectiveScratch] = 4*anySlot, 0, 0
		}
		if opt.BF16 { // converted part by part (New turns CompactBF16 on)
			parts[PartWeights] += c.compactBF16Bytes()
		}
		return parts
	}
	parts[PartWeights] = 4 * P // fp32 parameters
	if opt.LoRA != nil {
		parts[PartGradients] = 4 * vec // a frozen base: gradients of the norms and biases only, no moments
	} else {
		parts[PartGradients] = 4 * P
		parts[PartOptimizer] = opt.OptimizerBuffers() * 4 * P // AdamW m and v, LionW m
	}
	if opt.BF16 && !opt.CompactBF16 {
		parts[PartWeights] += 2 * P
	} else if opt.BF16 {
		parts[PartWeights] += c.compactBF16Bytes()
	}
	return parts
}

// shardSizes are, for n ranks, rank 0's shard (the largest: the sum of
// every part's chunk), the gather buffer (shardSlot) and the largest
// chunk. Every layer is as large as the first, so they come from the
// sizes of the embeddings, one layer and the head (ShardRanges and
// shardSlot walk every part, each looking up its range in ParamSpecs:
// quadratic in the layers, seconds for a plan of hundreds of layers,
// which RanksNeeded makes dozens of).
func (c *Config) shardSizes(n int64) (shard, slot, chunk int64) {
	up := func(size int64) int64 { return (size + n - 1) / n }
	lo0, hi0 := c.layerRange(0)
	embed, layer := int64(c.VocabSize*c.HiddenSize), int64(hi0-lo0)
	head := c.NumParams() - int64(lo0) - int64(c.NumHiddenLayers)*layer
	shard = up(embed) + int64(c.NumHiddenLayers)*up(layer) + up(head)
	chunk = max(up(embed), up(head))
	slot = max(n*up(embed), n*up(head))
	if c.NumHiddenLayers > 0 {
		chunk, slot = max(chunk, up(layer)), max(slot, n*up(layer))
	}
	if c.TieWordEmbeddings { // the head gathers the embeddings first
		slot = max(slot, n*up(embed)+n*up(head))
	}
	return shard, slot, chunk
}

// compactBF16Bytes is the bf16 output head and one layer of CompactBF16.
func (c *Config) compactBF16Bytes() int64 {
	lo, hi := c.layerRange(0)
	return 2 * (int64(c.VocabSize*c.HiddenSize) + int64(hi-lo))
}

// adapterSize is the number of weights of the adapter lc on this config.
func (c *Config) adapterSize(lc LoRAConfig) (int64, error) {
	if lc.Rank <= 0 {
		return 0, fmt.Errorf("lora rank %d: must be positive", lc.Rank)
	}
	on, err := lc.adapted(c)
	if err != nil {
		return 0, err
	}
	return int64(specsSize(c.adapterSpecs(lc.Rank, on))), nil
}

// dropoutSize is the elements of each LoRA dropout buffer (the dropped
// input, its gradient, the host mask) for lc on batches of N rows whose
// dense MLP runs R rows at a time (0 when lc is invalid): the largest
// rows × input of a projection lc adapts. The MLP's projections see R
// rows a call, so at long context the buffers are N × the attention's
// input width rather than N × the intermediate size.
func (c *Config) dropoutSize(lc LoRAConfig, N, R int) int {
	on, err := lc.adapted(c)
	if err != nil {
		return 0
	}
	size := 0
	for l := range on.site {
		for s, ok := range on.site[l] {
			if ok {
				in, _ := c.siteDims(s)
				rows := N
				if s == projGate || s == projUp || s == projDown {
					rows = R
				}
				size = max(size, rows*in)
			}
		}
		for e := range on.exp[l] {
			for k, ok := range on.exp[l][e] {
				if ok {
					in, _ := c.expertDims(k)
					size = max(size, N*in)
				}
			}
		}
	}
	return size
}

// Reserve allocates every activation buffer for micro-batches of B rows of
// T tokens now, so memory problems show at start-up.
func (m *Model) Reserve(B, T int) { m.ensure(B, T) }

// Fit adjusts opts so that training micro-batches of B rows of T tokens on
// dev fits in avail bytes (0: the machine's MemAvailable), keeping 10% and at least
// 2 GiB for everything else on the machine. It
// turns on the cheapest savings first, activation recomputation keeping
// the attention outputs, per-layer bf16 weights, keeping only as many
// layers' attention outputs as fit (down to the last layer's: plain
// recomputation's memory), then residual checkpoints (keeping a
// segment's attention outputs, as many as fit, then none), and says what
// it turned on. When nothing fits it
// fails with the numbers, before anything is allocated. With opts.Rank
// it plans that rank (a ZeRO-1 rank: its shard of the moments), so it
// turns on only what the rank needs.
func (c *Config) Fit(dev Device, opts Options, B, T int, avail int64) (Options, []string, error) {
	if avail <= 0 {
		if avail = MemAvailable(); avail <= 0 {
			return opts, nil, nil
		}
	}
	if opts.LoRA != nil {
		if _, err := c.adapterSize(*opts.LoRA); err != nil {
			return opts, nil, err
		}
	}
	got, notes, need, ok := c.fit(dev, opts, B, T, avail)
	if ok {
		return got, notes, nil
	}
	return got, notes, &FitError{Need: need, Avail: avail, Rows: B, Tokens: T, Params: c.NumParams(), Fits: c.fitAdvice(dev, opts, B, T, avail)}
}

// fit is Fit without the advice: the options, what it turned on, the
// bytes they need and whether that fits avail.
func (c *Config) fit(dev Device, opts Options, B, T int, avail int64) (Options, []string, int64, bool) {
	limit := MemoryBudget(avail)
	need := c.MemoryEstimate(dev, opts, B, T)
	if need <= limit {
		return opts, nil, need, true
	}
	var notes []string
	// Each rung turns a saving on and says which ("": none here).
	for _, rung := range []func(*Options) string{
		// A LoRA base already computed in bf16 loses only its fp32 copy.
		// A sharded base (ShardRanks) is converted part by part already:
		// New turns these two off and on, so Fit names neither.
		func(o *Options) string {
			if o.LoRA == nil || !o.BF16 || o.FrozenBF16 || o.ShardRanks != 0 {
				return ""
			}
			o.FrozenBF16 = true
			return "a frozen bf16 base"
		},
		// Recomputation first keeps the attention outputs, so the
		// attention (most of a long-context step) runs forward once.
		func(o *Options) string {
			if o.Recompute {
				return ""
			}
			o.Recompute, o.KeepAttention = true, true
			return "activation recomputation keeping the attention outputs"
		},
		func(o *Options) string {
			if !o.BF16 || o.CompactBF16 || o.FrozenBF16 || o.ShardRanks != 0 {
				return ""
			}
			o.CompactBF16 = true
			return "per-layer bf16 weights"
		},
		// Then as many layers' outputs as fit (keepatt.go), down to one
		// slot: plain recomputation's memory.
		func(o *Options) string { return c.fitKept(dev, o, B, T, limit) },
		// One more forward pass of most layers: the costliest, so last;
		// first keeping the segment's attention outputs (keepatt.go).
		func(o *Options) string {
			if o.CheckpointEvery > 1 || c.NumHiddenLayers <= 2 {
				return ""
			}
			o.CheckpointEvery, o.KeepAttention, o.KeepAttentionLayers = c.CheckpointSpacing(), true, 0
			return "residual checkpoints keeping the segment's attention outputs"
		},
		func(o *Options) string { return c.fitKept(dev, o, B, T, limit) },
		// Where two slots a segment do not fit (Fit's checkpoints or the
		// caller's), none: each layer's attention runs forward once more.
		func(o *Options) string {
			if !o.KeepAttention || o.CheckpointEvery <= 1 {
				return ""
			}
			o.KeepAttention = false
			return "recomputation of the attention outputs too"
		},
	} {
		what := rung(&opts)
		if what == "" {
			continue
		}
		notes = append(notes, fmt.Sprintf("turned on %s: %.1f GiB needed without it, %.1f GiB available", what, gib(need), gib(avail)))
		if need = c.MemoryEstimate(dev, opts, B, T); need <= limit {
			return opts, notes, need, true
		}
	}
	return opts, notes, need, false
}

// fitKept lowers o's attention slots (keepatt.go) to the most whose plan
// fits limit, and says so ("" where it changes nothing: o keeps no
// attention outputs or already the fewest). The fewest is one slot
// without checkpoints, plain recomputation's memory, so it lowers to one
// where none fit; two with them (one slot a segment keeps none), and only
// where two fit.
func (c *Config) fitKept(dev Device, o *Options, B, T int, limit int64) string {
	lo := 1
	if o.CheckpointEvery > 1 {
		lo = 2
	}
	n := o.keptSlots(c)
	fits := func(k int) bool {
		t := *o
		t.KeepAttentionLayers = k
		return c.MemoryEstimate(dev, t, B, T) <= limit
	}
	if n <= lo || lo > 1 && !fits(lo) {
		return ""
	}
	// The plan grows with the slots: the most that fit (one where none do).
	o.KeepAttentionLayers = lo + sort.Search(n-1-lo, func(i int) bool { return !fits(lo + 1 + i) })
	if o.CheckpointEvery > 1 {
		return "keeping the attention outputs" + o.keptLayers()
	}
	return fmt.Sprintf("keeping the attention outputs of only %d of %d layers", o.KeepAttentionLayers, c.NumHiddenLayers)
}

// Savings names the savings fitted has on that asked has not, in the
// words of Fit's notes: what a plan of fitted runs with beyond what was
// asked.
func Savings(asked, fitted Options) []string {
	var out []string
	if fitted.FrozenBF16 && !asked.FrozenBF16 {
		out = append(out, "a frozen bf16 base")
	}
	if fitted.Recompute && !asked.Recompute {
		if fitted.KeepAttention && fitted.CheckpointEvery <= 1 {
			out = append(out, "activation recomputation keeping the attention outputs"+fitted.keptLayers())
		} else {
			out = append(out, "activation recomputation")
		}
	} else if asked.keepAttention() && fitted.keepAttention() && fitted.KeepAttentionLayers != asked.KeepAttentionLayers && (fitted.CheckpointEvery <= 1 || asked.CheckpointEvery > 1) {
		out = append(out, "keeping the attention outputs"+fitted.keptLayers())
	}
	if asked.keepAttention() && !fitted.KeepAttention {
		out = append(out, "recomputation of the attention outputs too")
	}
	if fitted.CompactBF16 && !asked.CompactBF16 {
		out = append(out, "per-layer bf16 weights")
	}
	if fitted.Recompute && fitted.CheckpointEvery > 1 && !(asked.Recompute && asked.CheckpointEvery > 1) {
		keep := ""
		if fitted.KeepAttention {
			keep = ", each keeping its attention outputs"
			if fitted.KeepAttentionLayers > 0 {
				keep = ", keeping the attention outputs" + fitted.keptLayers()
			}
		}
		out = append(out, fmt.Sprintf("residual checkpoints (segments of at most %d layers%s)", fitted.CheckpointEvery, keep))
	}
	return out
}

// keptLayers says how many layers keep their attention outputs, for
// Savings and Fit's notes: nothing when every layer does.
func (o Options) keptLayers() string {
	k := o.KeepAttentionLayers
	if k <= 0 {
		return ""
	}
	s := fmt.Sprintf(" of only %d layer", k)
	if k > 1 {
		s += "s"
	}
	if o.CheckpointEvery > 1 {
		s += " a segment"
	}
	return s
}

func gib(b int64) float64 { return float64(b) / (1 << 30) }

// MemAvailable reads MemAvailable from /proc/meminfo (0 when unknown).
func MemAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
