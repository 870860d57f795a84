package bench

import (
	"errors"
	"fmt"
	"math"

	"hone/collective"
	"hone/dataparallel"
	"hone/engine"
)

// Scaling model (`hone bench scale`): for a model, a training method and
// a sharding over N ranks (machines), one optimizer step's compute at a
// given per-machine rate, the bytes each rank hands the collective and
// puts on the wire, the communication time at a given link bandwidth, and
// the memory plan of one rank.
//
// The traffic is counted from what hone's code does (StepTraffic; the
// test TestStepTrafficMatchesRanks checks it against a real run's counted
// calls), the wire bytes and times from the algorithms Gloo runs for each
// call (WireTime).

// Shardings of a data-parallel run.
const (
	ShardNone       = "none"       // every rank holds everything; gradients allreduced
	ShardOptimizer  = "optimizer"  // ZeRO stage 1 (dataparallel.Zero1)
	ShardParameters = "parameters" // ZeRO stage 3 (dataparallel.Sharded)
)

// StepTraffic is what one rank hands the collective in one optimizer step
// of c trained with options o (their LoRA, BF16, CompactBF16, Recompute,
// CheckpointEvery as the run's memory plan fitted them) over n ranks with
// the sharding: the payloads of collective.Counting. passes is the
// micro-batches each rank runs (rounded up over the ranks: with sharded
// parameters every rank runs as many passes as the busiest). embedRows is
// the number of distinct input token ids in the step over all ranks: the
// rows of an untied embedding gradient that an unsharded reduction moves
// (dataparallel.Reducer). counts adds the token counts `hone train` sums
// each step (dataparallel.SumCounts; `hone bench train` does not).
func StepTraffic(c *engine.Config, o engine.Options, sharding string, n, passes, embedRows int, counts bool) (collective.Traffic, error) {
	var t collective.Traffic
	if n < 2 {
		return t, nil
	}
	lora := o.LoRA != nil
	if counts {
		t.AllReduce.Calls, t.AllReduce.Bytes = 1, 4*6
	}
	switch sharding {
	case ShardNone:
		if lora {
			if err := adapterReduce(&t, c, o); err != nil {
				return t, err
			}
		} else {
			reducerTraffic(&t, c, false, embedRows)
		}
		addCalls(&t.AllReduce, 2) // the loss, as an fp32 pair
	case ShardOptimizer:
		if lora {
			return t, errors.New("bench: a sharded optimizer (ZeRO stage 1) is for full fine-tuning; a LoRA adapter's state is small")
		}
		zero1Traffic(&t, c, o, n, embedRows)
	case ShardParameters:
		if err := c.CheckShardable(); err != nil {
			return t, err
		}
		for range max(1, passes) {
			shardedPass(&t, c, o, n)
		}
		if lora {
			if err := adapterReduce(&t, c, o); err != nil {
				return t, err
			}
			addCalls(&t.AllReduce, 2) // the loss pair
		} else {
			addCalls(&t.AllReduce, 2) // the loss pair (SumLoss)
			addCalls(&t.AllReduce, 2) // the gradient norm's pair
		}
	default:
		return t, fmt.Errorf("bench: sharding %q: want none, optimizer or parameters", sharding)
	}
	return t, nil
}

// addCalls adds one call of floats.
func addCalls(op *collective.OpTraffic, floats int) {
	op.Calls++
	op.Bytes += 4 * int64(floats)
}

// addPart adds the calls of part p's gather or reduce-scatter over n
// ranks: one per segment, each padded to n equal chunks.
func addPart(op *collective.OpTraffic, c *engine.Config, p, n int) {
	for _, sg := range c.PartSegments(p, n) {
		addCalls(op, n*((sg.Hi-sg.Lo+n-1)/n))
	}
}

// addBuckets adds the calls of a buffer of floats sent in buckets of
// dataparallel.Bucket (no call for an empty one).
func addBuckets(op *collective.OpTraffic, floats int) {
	for lo := 0; lo < floats; lo += dataparallel.Bucket {
		addCalls(op, min(dataparallel.Bucket, floats-lo))
	}
}

// adapterReduce adds a LoRA adapter's gradient allreduce: each layer's
// adapter in buckets (the adapter's arena is its layers', in order).
func adapterReduce(t *collective.Traffic, c *engine.Config, o engine.Options) error {
	if len(o.LoRA.Layers) > 0 {
		return errors.New("bench: the scaling model assumes an adapter on every layer")
	}
	size, err := c.AdapterSize(*o.LoRA)
	if err != nil {
		return err
	}
	L := c.NumHiddenLayers
	for range L {
		addBuckets(&t.AllReduce, int(size)/L)
	}
	return nil
}

// layout is a full model's arena as the reducers see it: the embeddings
// [0, E), the layers (each PartRange), the head after them.
func layout(c *engine.Config) (embed [2]int, layers [][2]int, head [2]int) {
	lo, hi := c.PartRange(c.PartEmbed())
	embed = [2]int{lo, hi}
	for l := range c.NumHiddenLayers {
		lo, hi := c.PartRange(l)
		layers = append(layers, [2]int{lo, hi})
	}
	lo, hi = c.PartRange(c.PartHead())
	return embed, layers, [2]int{lo, hi}
}

// reducerTraffic adds a full model's gradient reduction (Reducer): the
// head, the layers last first, then the embeddings, by rows when they are
// untied. With zero1 (dataparallel.Zero1) every range after the untied
// embeddings is reduce-scattered in buckets instead of allreduced.
func reducerTraffic(t *collective.Traffic, c *engine.Config, zero1 bool, embedRows int) {
	embed, layers, head := layout(c)
	op := &t.AllReduce
	if zero1 {
		op = &t.ReduceScatter
	}
	ranges := [][2]int{head}
	for l := len(layers) - 1; l >= 0; l-- {
		ranges = append(ranges, layers[l])
	}
	for _, rg := range ranges {
		addBuckets(op, rg[1]-rg[0])
	}
	if c.TieWordEmbeddings {
		addBuckets(op, embed[1]-embed[0])
		return
	}
	addCalls(&t.AllReduce, c.VocabSize) // the mask of rows in use
	addBuckets(&t.AllReduce, min(embedRows, c.VocabSize)*c.HiddenSize)
}

// zero1Traffic adds a step of dataparallel.Zero1: the gradients
// reduce-scattered to the ranks' pieces, the norm's terms gathered, and
// every bucket's updated pieces all-gathered, each rank's part padded to
// the bucket's slot (the bf16 copy two halves a float and the fp32
// tensors the passes read in fp32, or the fp32 piece without a bf16
// copy).
func zero1Traffic(t *collective.Traffic, c *engine.Config, o engine.Options, n, embedRows int) {
	reducerTraffic(t, c, true, embedRows)
	addCalls(&t.AllReduce, 2)   // the loss pair
	addCalls(&t.AllGather, 2*n) // the norm's terms, float64 as two floats
	for _, b := range dataparallel.Zero1LayoutFor(c, o, n, dataparallel.Bucket).Buckets {
		addCalls(&t.AllGather, n*b.Slot)
	}
}

// shardedPass adds one training pass of a sharded model (engine's
// forwardTrunk, head and backwardLayers with dataparallel.Sharded's
// hooks): every part gathered (fp32, each segment padded to n equal
// chunks) before its forward and again before its backward, the layers a
// residual-checkpoint plan runs forward again gathered once more, and
// (unless the base is frozen) every part's gradient reduce-scattered after
// its backward.
func shardedPass(t *collective.Traffic, c *engine.Config, o engine.Options, n int) {
	frozen := o.LoRA != nil
	part := func(op *collective.OpTraffic, p int) { addPart(op, c, p, n) }
	L := c.NumHiddenLayers
	part(&t.AllGather, c.PartEmbed())
	for l := range L {
		part(&t.AllGather, l)
	}
	part(&t.AllGather, c.PartHead())
	if !frozen {
		part(&t.ReduceScatter, c.PartHead())
	}
	replays, embedAgain := o.ReplayedLayers(c)
	if embedAgain {
		part(&t.AllGather, c.PartEmbed())
	}
	for _, l := range replays {
		part(&t.AllGather, l)
	}
	for l := range L {
		part(&t.AllGather, l)
		if !frozen {
			part(&t.ReduceScatter, l)
		}
	}
	if !frozen {
		part(&t.ReduceScatter, c.PartEmbed())
	}
}

// WireTime turns a rank's step traffic into the bytes it sends and the
// seconds the calls take over links of gbps Gbit/s each way with latency
// seconds per algorithm step, for the algorithms Gloo runs (collective/
// gloo): allreduce a ring (each rank sends 2(n-1)/n of the buffer, 2(n-1)
// steps), allgather a ring ((n-1)/n of the output, n-1 steps),
// reduce-scatter the shim's ring ((n-1)/n of the buffer for equal parts,
// n-1 steps), and broadcast a binomial tree: ceil(log2 n) rounds, each moving the whole
// buffer, so a broadcast takes ceil(log2 n) buffer times while the ranks
// send (n-1)/n of the buffer on average. Calls do not overlap each other.
func WireTime(t collective.Traffic, n int, gbps, latency float64) (sentBytes, seconds float64) {
	if n < 2 {
		return 0, 0
	}
	bw := gbps * 1e9 / 8
	f := float64(n-1) / float64(n)
	rounds := math.Ceil(math.Log2(float64(n)))
	for _, op := range []struct {
		o            collective.OpTraffic
		sent, time   float64
		stepsPerCall float64
	}{
		{t.AllReduce, 2 * f, 2 * f, 2 * float64(n-1)},
		{t.AllGather, f, f, float64(n - 1)},
		{t.ReduceScatter, f, f, float64(n - 1)},
		{t.Broadcast, f, rounds, rounds},
	} {
		b := float64(op.o.Bytes)
		sentBytes += op.sent * b
		seconds += op.time*b/bw + float64(op.o.Calls)*op.stepsPerCall*latency
	}
	return sentBytes, seconds
}

// ScaleSpec is one case of the scaling model.
type ScaleSpec struct {
	Config    *engine.Config
	Precision string // bf16 or fp32
	LoRARank  int    // > 0: a LoRA adapter on every layer's default targets
	Optimizer string // "adamw" (also when empty) or "lionw": the state the memory plan counts
	Sharding  string // ShardNone, ShardOptimizer or ShardParameters
	Ranks     int
	// GbitPerS is each machine's link bandwidth, each way; Latency the
	// seconds of one algorithm step's message.
	GbitPerS float64
	Latency  float64
	Seq      int
	// GlobalRows is the rows (of Seq tokens) of one optimizer step over
	// all ranks; MicroRows the rows of one micro-batch (pass).
	GlobalRows, MicroRows int
	// GFLOPs is one machine's training rate in model FLOPs per second
	// (FLOPsPerToken's count, as `hone bench train` reports gflop_per_s).
	GFLOPs float64
	// MemoryBytes is each machine's memory the plan fits into.
	MemoryBytes int64
	// EmbedRows is the distinct input token ids of a step (the rows of an
	// untied embedding gradient the unsharded reductions move); 0: the
	// vocabulary, the most.
	EmbedRows int
}

// ScaleResult is one row of `hone bench scale`.
type ScaleResult struct {
	Model     string  `json:"model"`
	Params    int64   `json:"params"`
	Method    string  `json:"method"`
	Optimizer string  `json:"optimizer"`
	LoRARank  int     `json:"lora_rank,omitempty"`
	Trainable int64   `json:"trainable_params"`
	Precision string  `json:"precision"`
	Sharding  string  `json:"sharding"`
	Ranks     int     `json:"ranks"`
	GbitPerS  float64 `json:"gbit_per_s"`
	LatencyUS float64 `json:"latency_us"`
	Seq       int     `json:"seq"`
	Rows      int     `json:"global_rows"`
	MicroRows int     `json:"micro_rows"`
	Passes    int     `json:"passes_per_rank"`
	Tokens    int64   `json:"tokens_per_step"`
	// ModelFLOPs is the step's model FLOPs over all ranks; ComputeS one
	// rank's share (its passes) at GFLOPs.
	ModelFLOPs float64 `json:"model_flops"`
	GFLOPs     float64 `json:"gflop_per_s_per_rank"`
	ComputeS   float64 `json:"compute_s"`
	// Traffic is one rank's payloads per step; SentBytes the bytes it
	// sends on the wire; CommS the calls' time.
	Traffic   collective.Traffic `json:"traffic"`
	SentBytes float64            `json:"sent_bytes"`
	CommS     float64            `json:"comm_s"`
	// SerialS is compute plus communication; OverlapS their max (every
	// byte hidden behind compute); TodayS what hone overlaps today (see
	// todaySeconds).
	SerialS   float64 `json:"step_s_serial"`
	OverlapS  float64 `json:"step_s_overlapped"`
	TodayS    float64 `json:"step_s_today"`
	TokensPS  float64 `json:"tokens_per_s_today"`
	CommShare float64 `json:"comm_share_today"`
	// The memory plan of one rank (Plan with PlanRanks; for a sharded
	// optimizer the optimizer state cut to the rank's share).
	PeakBytes   int64    `json:"peak_bytes_per_rank"`
	MemoryBytes int64    `json:"memory_bytes"`
	Fits        bool     `json:"fits"`
	Savings     []string `json:"savings"`
	RanksNeeded int      `json:"ranks_needed,omitempty"`
}

// Scale computes one case.
func Scale(s ScaleSpec) (*ScaleResult, error) {
	if s.Ranks < 1 || s.Seq <= 0 || s.GlobalRows <= 0 || s.MicroRows <= 0 || !(s.GFLOPs > 0) || !(s.GbitPerS > 0) {
		return nil, errors.New("bench: scale needs ranks, seq, rows, micro-batch rows, a rate and a bandwidth, all positive")
	}
	if s.GlobalRows%(s.Ranks*s.MicroRows) != 0 {
		return nil, fmt.Errorf("bench: %d rows do not split into micro-batches of %d rows over %d ranks evenly", s.GlobalRows, s.MicroRows, s.Ranks)
	}
	c := s.Config
	passes := s.GlobalRows / s.MicroRows / s.Ranks
	ts := TrainSpec{Config: c, Seq: s.Seq, Batch: s.MicroRows * s.Ranks, Precision: s.Precision, LoRARank: s.LoRARank, Optimizer: s.Optimizer,
		ShardParameters: s.Sharding == ShardParameters, ShardOptimizer: s.Sharding == ShardOptimizer, PlanRanks: s.Ranks}
	plan, err := Plan(ts, s.MemoryBytes)
	if err != nil {
		return nil, err
	}
	opts := ts.options()
	opts.Recompute, opts.CheckpointEvery, opts.CompactBF16, opts.FrozenBF16 = plan.Recompute, plan.CheckpointEvery, plan.CompactBF16, plan.FrozenBF16
	opts.KeepAttention, opts.KeepAttentionLayers = plan.KeepAttention, plan.KeepAttentionLayers
	embedRows := s.EmbedRows
	if embedRows <= 0 {
		embedRows = c.VocabSize
	}
	traffic, err := StepTraffic(c, opts, s.Sharding, s.Ranks, passes, embedRows, true)
	if err != nil {
		return nil, err
	}
	res := &ScaleResult{Model: modelName(c), Params: c.NumParams(), Method: "full", Optimizer: plan.Optimizer, Trainable: c.NumParams(), Precision: s.Precision, Sharding: s.Sharding,
		Ranks: s.Ranks, GbitPerS: s.GbitPerS, LatencyUS: s.Latency * 1e6, Seq: s.Seq, Rows: s.GlobalRows, MicroRows: s.MicroRows, Passes: passes,
		Tokens: int64(s.GlobalRows) * int64(s.Seq), GFLOPs: s.GFLOPs, Traffic: traffic,
		PeakBytes: plan.PeakBytes, MemoryBytes: plan.AvailableBytes, Fits: plan.Fits, Savings: plan.Savings, RanksNeeded: plan.RanksNeeded}
	flops := FLOPsPerToken(c, s.Seq)
	if s.LoRARank > 0 {
		size, err := c.AdapterSize(*opts.LoRA)
		if err != nil {
			return nil, err
		}
		res.Method, res.LoRARank, res.Trainable = "lora", s.LoRARank, size
		flops = loraFLOPsPerToken(c, s.Seq, int(size))
	}
	res.ModelFLOPs = flops * float64(res.Tokens)
	res.ComputeS = flops * float64(passes*s.MicroRows*s.Seq) / (s.GFLOPs * 1e9)
	res.SentBytes, res.CommS = WireTime(traffic, s.Ranks, s.GbitPerS, s.Latency)
	res.SerialS = res.ComputeS + res.CommS
	res.OverlapS = max(res.ComputeS, res.CommS)
	res.TodayS = todaySeconds(s, res)
	res.TokensPS = float64(res.Tokens) / res.TodayS
	res.CommShare = (res.TodayS - res.ComputeS) / res.TodayS
	return res, nil
}

// todaySeconds is the step time with the overlap hone has today. With
// sharded parameters each part's gather is prefetched while the part
// before it computes and reduce-scatters run behind the next part's
// backward, so a pass takes the larger of its compute and its
// communication, plus the gathers nothing hides: the embeddings' at the
// start of the pass, layer 0's after them and, where the layers cannot
// alternate their two buffers, one in the backward pass (taken as two
// layers' gathers). Without, the gradients of the last micro-batch are
// reduced while its backward pass runs (taken as 2/3 of its compute), and
// a sharded optimizer's weight exchange runs after (it overlaps only the
// optimizer's update).
func todaySeconds(s ScaleSpec, r *ScaleResult) float64 {
	if s.Ranks < 2 {
		return r.SerialS
	}
	if s.Sharding == ShardParameters {
		var first collective.Traffic
		for _, p := range []int{s.Config.PartEmbed(), 0, 0} {
			addPart(&first.AllGather, s.Config, p, s.Ranks)
		}
		_, unhidden := WireTime(first, s.Ranks, s.GbitPerS, s.Latency)
		passes := float64(r.Passes)
		compute, comm := r.ComputeS/passes, r.CommS/passes
		return passes * (unhidden + max(compute, comm-unhidden))
	}
	// The gradients' reduction (ZeRO-1: its reduce-scatters), not the
	// weights' all-gathers.
	grads := collective.Traffic{AllReduce: r.Traffic.AllReduce, ReduceScatter: r.Traffic.ReduceScatter}
	_, gradS := WireTime(grads, s.Ranks, s.GbitPerS, s.Latency)
	backward := 2.0 / 3 * r.ComputeS / float64(r.Passes)
	return r.ComputeS + max(0, gradS-backward) + (r.CommS - gradS)
}

// modelName names a config by its shape.
func modelName(c *engine.Config) string {
	return fmt.Sprintf("%s %.1fB", c.ModelType, float64(c.NumParams())/1e9)
}
