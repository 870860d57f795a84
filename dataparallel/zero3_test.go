package dataparallel

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"hone/collective"
	"hone/engine"
	_ "hone/engine/cpu"
	"hone/optim"
)

// hub is an in-process group of n ranks (goroutines) for unit tests: each
// call deposits its buffer, waits for every rank, computes its result
// from all the deposits, and waits again before anyone reuses them.
type hub struct {
	n          int
	mu         sync.Mutex
	cond       *sync.Cond
	count, gen int
	bufs       [][]float32
}

func newHub(n int) *hub {
	h := &hub{n: n, bufs: make([][]float32, n)}
	h.cond = sync.NewCond(&h.mu)
	return h
}

func (h *hub) barrier() {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.gen
	if h.count++; h.count == h.n {
		h.count, h.gen = 0, h.gen+1
		h.cond.Broadcast()
		return
	}
	for g == h.gen {
		h.cond.Wait()
	}
}

type hubRank struct {
	h    *hub
	rank int
}

var _ collective.Collective = hubRank{}

func (r hubRank) Rank() int { return r.rank }
func (r hubRank) Size() int { return r.h.n }
func (r hubRank) Close() error {
	return nil
}
func (r hubRank) Barrier(context.Context) error { r.h.barrier(); return nil }

// sum adds every rank's deposit over [lo, hi) in rank order.
func (r hubRank) sum(buf []float32, lo, hi int) []float32 {
	r.h.bufs[r.rank] = buf
	r.h.barrier()
	out := make([]float32, hi-lo)
	for _, b := range r.h.bufs {
		for i := range out {
			out[i] += b[lo+i]
		}
	}
	r.h.barrier()
	return out
}

func (r hubRank) AllReduce(_ context.Context, buf []float32) error {
	copy(buf, r.sum(buf, 0, len(buf)))
	return nil
}

// ReduceScatter leaves NaN outside this rank's part (scratch, as the
// contract allows), so that a caller reading it there fails the tests.
func (r hubRank) ReduceScatter(_ context.Context, buf []float32, counts []int) error {
	off := collective.Offsets(counts)
	mine := r.sum(buf, off[r.rank], off[r.rank+1])
	for i := range buf {
		buf[i] = float32(math.NaN())
	}
	copy(buf[off[r.rank]:], mine)
	return nil
}

func (r hubRank) AllGather(_ context.Context, out, in []float32) error {
	r.h.bufs[r.rank] = in
	r.h.barrier()
	for q, b := range r.h.bufs {
		copy(out[q*len(in):], b)
	}
	r.h.barrier()
	return nil
}

func (r hubRank) Broadcast(_ context.Context, buf []float32, root int) error {
	r.h.bufs[r.rank] = buf
	r.h.barrier()
	if r.rank != root {
		copy(buf, r.h.bufs[root])
	}
	r.h.barrier()
	return nil
}

const testConfig = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 300, "hidden_size": 32,
	"intermediate_size": 88, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
	"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 256, "attention_bias": true, "tie_word_embeddings": %v}`

// testCfg is testConfig, its embeddings tied or not.
func testCfg(t *testing.T, tied bool) *engine.Config {
	cfg, err := engine.ParseConfig([]byte(fmt.Sprintf(testConfig, tied)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func testBatch(t *testing.T, r *rand.Rand, B, T, V int) *engine.Batch {
	ids := make([][]int, B)
	for i := range ids {
		ids[i] = make([]int, T)
		for j := range ids[i] {
			ids[i][j] = r.IntN(V)
		}
	}
	bt, err := engine.NewBatch(ids, ids, nil, V)
	if err != nil {
		t.Fatal(err)
	}
	return bt
}

func openCPU(t *testing.T, dev engine.Device) engine.Device {
	if dev != nil {
		return dev
	}
	d, err := engine.OpenDevice("cpu", engine.DeviceOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Three steps of a model sharded over n in-process ranks (rank q runs
// micro-batch q) equal three steps of one unsharded model on all the
// micro-batches: the parts are gathered, released and reduce-scattered
// in every layer order the engine has (plain, recomputation, residual
// checkpoints, whose first segment embeds the batch again in the
// backward; the head's final norm per loss chunk). Then the sharded
// model's logits (Logits, the final norm per loss chunk) equal the
// unsharded model's. LionW on the shards takes unsharded LionW's steps.
func TestShardedStepsMatchUnsharded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		n     int
		opt   engine.Options
		tied  bool
		lionw bool
	}{
		{"plain", 2, engine.Options{}, false, false},
		{"recompute", 3, engine.Options{Recompute: true}, false, false},
		{"checkpoints", 2, engine.Options{Recompute: true, CheckpointEvery: 2, MLPChunk: 8}, false, false},
		{"bf16", 2, engine.Options{BF16: true, CompactBF16: true, Recompute: true}, false, false},
		{"tied", 3, engine.Options{}, true, false},
		{"tied-bf16", 2, engine.Options{BF16: true, CompactBF16: true}, true, false},
		{"checkpoints-tied", 3, engine.Options{Recompute: true, CheckpointEvery: 2, LossChunk: 8}, true, false},
		{"checkpoints-bf16", 2, engine.Options{BF16: true, CompactBF16: true, Recompute: true, CheckpointEvery: 3, LossChunk: 8}, false, false},
		{"lionw", 2, engine.Options{}, false, true},
		{"lionw-tied", 3, engine.Options{Recompute: true}, true, true},
		{"lionw-bf16", 2, engine.Options{BF16: true, CompactBF16: true}, false, true},
	} {
		t.Run(fmt.Sprintf("%s/%d-ranks", tc.name, tc.n), func(t *testing.T) {
			cfg := testCfg(t, tc.tied)
			r := rand.New(rand.NewPCG(1, 2))
			batches := make([]*engine.Batch, tc.n)
			scored := 0
			for i := range batches {
				batches[i] = testBatch(t, r, 2, 16, cfg.VocabSize)
				scored += batches[i].Scored()
			}
			const steps, lr = 3, 1e-2
			ref := engine.New(cfg, openCPU(t, nil), tc.opt)
			ref.InitRandom(7)
			lcfg := optim.LionWConfig{Beta1: 0.9, Beta2: 0.99, WeightDecay: 0.1, MaxGradNorm: 1}
			newRanges := optim.AdamWRanges(optim.DefaultAdamW)
			var o optim.Optimizer
			var err error
			if tc.lionw {
				newRanges = optim.LionWRanges(lcfg, 2*lr)
				o, err = optim.NewLionW(ref, lcfg, 2*lr)
			} else {
				o, err = optim.NewAdamW(ref, optim.DefaultAdamW)
			}
			if err != nil {
				t.Fatal(err)
			}
			var refLoss [steps]float64
			for s := range steps {
				ref.ZeroGrad()
				for _, bt := range batches {
					l, _ := ref.ForwardBackward(bt, 1/float32(scored))
					refLoss[s] += l
				}
				if _, err := o.Step(ref, lr); err != nil {
					t.Fatal(err)
				}
			}
			want := engine.HostView(ref.Dev, ref.Params.Arena)
			wantLogits := ref.Logits(batches[0])

			h := newHub(tc.n)
			got := make([]float32, cfg.NumParams())
			var gotLogits []float32
			losses := make([][steps]float64, tc.n)
			errs := make([]error, tc.n)
			var wg sync.WaitGroup
			for q := range tc.n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[q] = func() error {
						c := hubRank{h, q}
						opt := tc.opt
						opt.ShardRanks = tc.n
						m := engine.New(cfg, openCPU(t, nil), opt)
						sh, err := NewSharded(c, m)
						if err != nil {
							return err
						}
						engine.InitRandomRanges(cfg, 7, sh.Ranges(), sh.Chunks(sh.P))
						o, err := sh.NewOptimizer(newRanges)
						if err != nil {
							return err
						}
						ctx := context.Background()
						for s := range steps {
							sh.Begin(ctx)
							sh.ZeroGrad()
							l, _ := m.ForwardBackward(batches[q], 1/float32(scored))
							if err := sh.Err(); err != nil {
								return err
							}
							if losses[q][s], err = SumLoss(ctx, c, l); err != nil {
								return err
							}
							if _, err := sh.Step(ctx, o, lr); err != nil {
								return err
							}
						}
						logits := m.Logits(batches[0]) // every rank: the gathers are collective
						if err := sh.Err(); err != nil {
							return err
						}
						var dst []float32
						if q == 0 {
							dst, gotLogits = got, logits
						}
						return sh.GatherTo(ctx, 0, dst)
					}()
				}()
			}
			wg.Wait()
			for q, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", q, err)
				}
			}
			// In bf16 the summation order's last-bit differences flip
			// a few weights' bf16 rounding from step 2 on, and AdamW
			// magnifies the tiny gradients they touch: the first two
			// losses must agree closely, later ones and the weights
			// within what such flips explain (a wrong part gathered or
			// converted would be off by far more).
			// LionW's update is lr·sign(…): the gradients' rounding
			// leaves its weights bit for bit those of one process.
			lossTol, weightTol := []float64{1e-6, 1e-6, 1e-6}, 1e-5
			switch {
			case tc.lionw:
				weightTol = 0
			case tc.opt.BF16:
				lossTol, weightTol = []float64{1e-6, 1e-6, 1e-4}, lr
			}
			for s := range steps {
				if d := math.Abs(losses[0][s] - refLoss[s]); d > lossTol[s]*refLoss[s] {
					t.Errorf("step %d: loss %.9g sharded, %.9g unsharded", s+1, losses[0][s], refLoss[s])
				}
			}
			var worst float64
			for i := range want {
				worst = max(worst, math.Abs(float64(want[i])-float64(got[i])))
			}
			if worst > weightTol {
				t.Errorf("weights after %d steps differ by up to %g, want ≤ %g", steps, worst, weightTol)
			}
			if !tc.opt.BF16 { // bf16's weights may differ by lr (above)
				worst = 0
				for i := range wantLogits {
					worst = max(worst, math.Abs(float64(wantLogits[i])-float64(gotLogits[i])))
				}
				if worst > 1e-4 {
					t.Errorf("logits after %d steps differ by up to %g, want ≤ 1e-4", steps, worst)
				}
			}
		})
	}
}

// The memory plan of a sharded rank (Options.ShardRanks) matches what the
// rank allocates: its shards, the moments, the gather buffers (a part's
// and a layer's, for parameters and gradients; a LoRA base has one for
// gradients) and the activations, at their peak.
func TestShardedMemoryMatchesPlan(t *testing.T) {
	const n, B, T = 2, 2, 32
	for i, opt := range []engine.Options{{ShardRanks: n}, {ShardRanks: n, LoRA: &engine.LoRAConfig{Rank: 4, Alpha: 8}},
		{ShardRanks: n, BF16: true, Recompute: true}, {ShardRanks: n},
		{ShardRanks: n, Recompute: true, CheckpointEvery: 2, LossChunk: 8},
		{ShardRanks: n, LoRA: &engine.LoRAConfig{Rank: 4, Alpha: 8}, Recompute: true, CheckpointEvery: 2},
		{ShardRanks: n, BF16: true, CompactBF16: true},
		{ShardRanks: n, QuantizeBase: engine.QuantizeNF4, LoRA: &engine.LoRAConfig{Rank: 4, Alpha: 8}},
		{ShardRanks: n, QuantizeBase: engine.QuantizeNF4, LoRA: &engine.LoRAConfig{Rank: 4, Alpha: 8}, BF16: true, Recompute: true, NF4SingleScale: true}} {
		cfg := testCfg(t, i == 3)
		h := newHub(n)
		peaks := make([]int64, n)
		errs := make([]error, n)
		var est int64
		var wg sync.WaitGroup
		for q := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dev := engine.NewCountingDevice(openCPU(t, nil))
				if q == 0 {
					// Less what the device and Gloo keep themselves (the test group keeps nothing).
					plan := cfg.MemoryPlan(dev, opt, B, T)
					est = plan.PeakBytes - plan.Parts[engine.PartCollectiveScratch] - engine.AttentionScratchFor(dev, opt.BF16, B, T, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim)
				}
				errs[q] = func() error {
					m := engine.New(cfg, dev, opt)
					c := hubRank{h, q}
					sh, err := NewSharded(c, m)
					if err != nil {
						return err
					}
					if opt.QuantizeBase != "" { // into this rank's chunks of the NF4 layers
						m.InitRandom(1)
					} else {
						engine.InitRandomRanges(cfg, 1, sh.Ranges(), sh.Chunks(sh.P))
					}
					ctx := context.Background()
					step := func() error { return nil }
					if opt.LoRA != nil {
						a, err := engine.NewAdapter(cfg, dev, *opt.LoRA)
						if err != nil {
							return err
						}
						a.InitPEFT(1)
						if err := m.Attach(a); err != nil {
							return err
						}
						o, err := optim.NewAdamWAdapter(a, optim.DefaultAdamW)
						if err != nil {
							return err
						}
						step = func() error { _, err := o.StepAdapter(a, 1e-3); return err }
					} else {
						o, err := sh.NewOptimizer(optim.AdamWRanges(optim.DefaultAdamW))
						if err != nil {
							return err
						}
						step = func() error { _, err := sh.Step(ctx, o, 1e-3); return err }
					}
					m.Reserve(B, T)
					bt := testBatch(t, rand.New(rand.NewPCG(3, uint64(q))), B, T, cfg.VocabSize)
					sh.ZeroGrad()
					m.ForwardBackward(bt, 1/float32(bt.Scored()))
					if err := sh.Err(); err != nil {
						return err
					}
					return step()
				}()
				peaks[q] = dev.Memory().Peak
			}()
		}
		wg.Wait()
		for q, err := range errs {
			if err != nil {
				t.Fatalf("rank %d: %v", q, err)
			}
		}
		// Rank 0 holds the largest shard: the plan is its.
		t.Logf("LoRA %v, NF4 %v, bf16 %v, checkpoints %d: plan %d bytes, rank 0 allocated %d, rank 1 %d", opt.LoRA != nil, opt.QuantizeBase != "", opt.BF16, opt.CheckpointEvery, est, peaks[0], peaks[1])
		// An NF4 base's chunks and gather buffers are small beside the
		// activations here: its plan is held to the byte.
		if opt.QuantizeBase != "" && est != peaks[0] {
			t.Errorf("NF4, bf16 %v: sharded plan %d bytes, rank 0 allocated %d", opt.BF16, est, peaks[0])
		}
		if rel := float64(est-peaks[0]) / float64(peaks[0]); math.Abs(rel) > 0.01 {
			t.Errorf("LoRA %v, NF4 %v, bf16 %v, checkpoints %d: sharded plan %d bytes, rank 0 allocated %d: off by %.2f%%", opt.LoRA != nil, opt.QuantizeBase != "", opt.BF16, opt.CheckpointEvery, est, peaks[0], 100*rel)
		}
	}
}

// A LoRA adapter trained on a base sharded over 2 in-process ranks (the
// base gathered part by part, taking no gradients; the adapter's
// gradients summed by Reducer) takes the steps of one unsharded process.
func TestShardedLoRABaseMatchesUnsharded(t *testing.T) {
	// With residual checkpoints the backward pass embeds the batch again
	// from the sharded base's embeddings.
	for _, opt := range []engine.Options{{}, {Recompute: true, CheckpointEvery: 2}} {
		t.Run(fmt.Sprintf("checkpoint-every-%d", opt.CheckpointEvery), func(t *testing.T) {
			cfg := testCfg(t, false)
			const n, steps, lr = 2, 3, 1e-2
			lc := engine.LoRAConfig{Rank: 4, Alpha: 8}
			r := rand.New(rand.NewPCG(4, 5))
			batches := make([]*engine.Batch, n)
			scored := 0
			for i := range batches {
				batches[i] = testBatch(t, r, 2, 16, cfg.VocabSize)
				scored += batches[i].Scored()
			}
			ref := engine.New(cfg, openCPU(t, nil), withLoRA(opt, &lc, 0))
			ref.InitRandom(7)
			want, err := trainAdapter(ref, lc, nil, nil, batches, scored, steps, lr)
			if err != nil {
				t.Fatal(err)
			}
			h := newHub(n)
			got := make([][]float32, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for q := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					m := engine.New(cfg, openCPU(t, nil), withLoRA(opt, &lc, n))
					sh, err := NewSharded(hubRank{h, q}, m)
					if err != nil {
						errs[q] = err
						return
					}
					engine.InitRandomRanges(cfg, 7, sh.Ranges(), sh.Chunks(sh.P))
					got[q], errs[q] = trainAdapter(m, lc, hubRank{h, q}, sh, batches[q:q+1], scored, steps, lr)
				}()
			}
			wg.Wait()
			for q := range n {
				if errs[q] != nil {
					t.Fatalf("rank %d: %v", q, errs[q])
				}
				var worst float64
				for i := range want {
					worst = max(worst, math.Abs(float64(want[i])-float64(got[q][i])))
				}
				if worst > 1e-5 {
					t.Errorf("rank %d: adapter after %d steps differs by up to %g, want ≤ 1e-5", q, steps, worst)
				}
			}
		})
	}
}

// trainAdapter trains a fresh adapter of lc attached to m for steps on
// the batches mine (over the group c, the base sharded by sh when not
// nil; scored tokens in the whole step) and returns its weights.
func trainAdapter(m *engine.Model, lc engine.LoRAConfig, c collective.Collective, sh *Sharded, mine []*engine.Batch, scored, steps int, lr float64) ([]float32, error) {
	a, err := engine.NewAdapter(m.Config, m.Dev, lc)
	if err != nil {
		return nil, err
	}
	a.InitPEFT(3)
	if err := m.Attach(a); err != nil {
		return nil, err
	}
	o, err := optim.NewAdamWAdapter(a, optim.DefaultAdamW)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	for range steps {
		a.ZeroGrad()
		if sh != nil {
			sh.Begin(ctx)
			sh.Passes(len(mine))
		}
		red := Start(ctx, c, m, a)
		var sum float64
		for _, bt := range mine {
			l, _ := m.ForwardBackward(bt, 1/float32(scored))
			sum += l
		}
		if sh != nil {
			if err := sh.Err(); err != nil {
				return nil, err
			}
		}
		if _, err := red.Finish(sum); err != nil {
			return nil, err
		}
		if _, err := o.StepAdapter(a, lr); err != nil {
			return nil, err
		}
	}
	return engine.HostView(m.Dev, a.Params), nil
}

// withLoRA is opt with the adapter lc, sharded over n ranks.
func withLoRA(opt engine.Options, lc *engine.LoRAConfig, n int) engine.Options {
	opt.LoRA, opt.ShardRanks = lc, n
	return opt
}

// QLoRA on an NF4 base sharded over n in-process ranks (each layer's NF4
// data gathered from the ranks' chunks, then dequantized as an unsharded
// base dequantizes its own) takes bit for bit the steps of n data-parallel
// ranks that each hold the whole NF4 base, in fp32 and bf16, with
// recomputation and residual checkpoints (layers gathered again, out of
// order), single or double quantized scales, NF4 embeddings; on one rank,
// those of one unsharded process.
func TestShardedNF4MatchesUnsharded(t *testing.T) {
	lc := engine.LoRAConfig{Rank: 4, Alpha: 8}
	nf4 := engine.Options{QuantizeBase: engine.QuantizeNF4, LoRA: &lc}
	variant := func(f func(*engine.Options)) engine.Options { o := nf4; f(&o); return o }
	for _, tc := range []struct {
		name string
		n    int
		opt  engine.Options
	}{
		{"fp32", 2, nf4},
		{"fp32", 3, nf4},
		{"fp32", 1, nf4},
		{"bf16", 2, variant(func(o *engine.Options) { o.BF16 = true })},
		{"bf16-checkpoints", 3, variant(func(o *engine.Options) { o.BF16, o.Recompute, o.CheckpointEvery = true, true, 2 })},
		{"recompute-single-scale", 2, variant(func(o *engine.Options) { o.Recompute, o.NF4SingleScale = true, true })},
		{"nf4-embeddings", 2, variant(func(o *engine.Options) { o.NF4Embeddings, o.BF16 = true, true })},
	} {
		t.Run(fmt.Sprintf("%s-%d-ranks", tc.name, tc.n), func(t *testing.T) {
			cfg := testCfg(t, false)
			const steps, lr = 3, 1e-2
			r := rand.New(rand.NewPCG(4, 5))
			batches := make([]*engine.Batch, tc.n)
			scored := 0
			for i := range batches {
				batches[i] = testBatch(t, r, 2, 16, cfg.VocabSize)
				scored += batches[i].Scored()
			}
			// run trains on n ranks, sharded or each with the whole base.
			run := func(n int, shard bool) [][]float32 {
				h := newHub(n)
				got := make([][]float32, n)
				errs := make([]error, n)
				var wg sync.WaitGroup
				for q := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						opt := tc.opt
						var sh *Sharded
						var c collective.Collective = hubRank{h, q}
						mine := batches[q : q+1]
						if n == 1 {
							c, mine = nil, batches
						}
						if shard {
							opt.ShardRanks = n
						}
						m := engine.New(cfg, openCPU(t, nil), opt)
						defer m.Close()
						if shard {
							if sh, errs[q] = NewSharded(hubRank{h, q}, m); errs[q] != nil {
								return
							}
						}
						m.InitRandom(7)
						got[q], errs[q] = trainAdapter(m, lc, c, sh, mine, scored, steps, lr)
					}()
				}
				wg.Wait()
				for q, err := range errs {
					if err != nil {
						t.Fatalf("rank %d: %v", q, err)
					}
				}
				return got
			}
			want, got := run(tc.n, false), run(tc.n, true)
			for q := range tc.n {
				for i := range want[q] {
					if math.Float32bits(want[q][i]) != math.Float32bits(got[q][i]) {
						t.Fatalf("rank %d: adapter weight %d after %d steps is %g sharded, %g with the whole base", q, i, steps, got[q][i], want[q][i])
					}
				}
			}
		})
	}
}
