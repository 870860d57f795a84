package dataparallel

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"hone/engine"
	"hone/optim"
)

// Three steps with the optimizer state sharded over n in-process ranks
// (Zero1: rank q runs micro-batch q, each bucket's gradients are
// reduce-scattered to the ranks' pieces, the bf16 copy and the fp32
// tensors read in fp32 are all-gathered back) take the steps of the
// unsharded data-parallel ranks (Reducer, every rank updating
// everything): the same losses, and bit for bit the same weights (the
// bf16 copy the passes read and, after SyncParams, every fp32 weight) on
// every rank when nothing clips; the test group sums a reduce-scatter in
// the allreduce's order (rank order) and leaves NaN outside a rank's
// part, and a piece unpacked at another rank's place would leave weights
// stale. With clipping, the norm summed from the shards groups its terms
// otherwise, so the weights agree to rounding. Buckets of 999 floats cut
// pieces of unequal sizes (the last rank's odd) at odd offsets. The
// batches leave embedding rows untouched. With LionW (its one moment,
// weight decay scaled by lr/peak) as with AdamW: every rank's pieces, the
// embeddings included, take unsharded LionW's steps bit for bit.
func TestZero1MatchesDataParallel(t *testing.T) {
	for _, tc := range []struct {
		n          int
		opt        engine.Options
		tied, clip bool
		lionw      bool
	}{
		{2, engine.Options{BF16: true}, false, false, false},
		{2, engine.Options{BF16: true}, false, true, false},
		{2, engine.Options{BF16: true}, true, false, false},
		{2, engine.Options{}, false, false, false},
		{3, engine.Options{BF16: true}, false, true, false},
		{3, engine.Options{BF16: true}, false, false, false},
		{3, engine.Options{BF16: true}, true, false, false},
		{3, engine.Options{}, false, false, false},
		{4, engine.Options{BF16: true}, false, false, false},
		{4, engine.Options{}, true, false, false},
		{5, engine.Options{BF16: true}, true, true, false},
		{2, engine.Options{BF16: true, CompactBF16: true}, false, false, false},
		{3, engine.Options{BF16: true, CompactBF16: true}, false, false, false},
		{2, engine.Options{BF16: true}, false, false, true},
		{2, engine.Options{}, false, false, true},
		{3, engine.Options{BF16: true}, false, false, true},
		{3, engine.Options{}, true, false, true},
		{3, engine.Options{BF16: true}, false, true, true},
	} {
		name := "adamw"
		if tc.lionw {
			name = "lionw"
		}
		t.Run(fmt.Sprintf("%s/%d-ranks/bf16-%v/compact-%v/tied-%v/clip-%v", name, tc.n, tc.opt.BF16, tc.opt.CompactBF16, tc.tied, tc.clip), func(t *testing.T) {
			cfg := testCfg(t, tc.tied)
			r := rand.New(rand.NewPCG(3, 4))
			batches := make([]*engine.Batch, tc.n)
			scored := 0
			for i := range batches {
				batches[i] = testBatch(t, r, 2, 12, cfg.VocabSize/2)
				scored += batches[i].Scored()
			}
			const steps, lr = 3, 1e-2
			ocfg, lcfg := optim.DefaultAdamW, optim.LionWConfig{Beta1: 0.9, Beta2: 0.99, WeightDecay: 0.1}
			ocfg.MaxGradNorm = 0
			if tc.clip {
				ocfg.MaxGradNorm, lcfg.MaxGradNorm = 1e-3, 1e-3 // every step clips
			}
			newRanges := optim.AdamWRanges(ocfg)
			if tc.lionw {
				newRanges = optim.LionWRanges(lcfg, 2*lr)
			}
			whole := func(m *engine.Model) (optim.Optimizer, error) { // unsharded
				if tc.lionw {
					return optim.NewLionW(m, lcfg, 2*lr)
				}
				return optim.NewAdamW(m, ocfg)
			}
			type result struct {
				losses, norms [steps]float64
				w             []float32
				w16           []uint16
			}
			run := func(zero bool) []result {
				h := newHub(tc.n)
				out := make([]result, tc.n)
				errs := make([]error, tc.n)
				var wg sync.WaitGroup
				for q := range tc.n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[q] = func() error {
							c := hubRank{h, q}
							m := engine.New(cfg, openCPU(t, nil), tc.opt)
							m.InitRandom(7)
							ctx := context.Background()
							var z *Zero1
							var o optim.Optimizer
							var err error
							if zero {
								// Odd buckets: each rank sends its shard in
								// several, at odd offsets.
								z, err = newZero1(c, m, newRanges, 999)
							} else {
								o, err = whole(m)
							}
							if err != nil {
								return err
							}
							res := &out[q]
							for s := range steps {
								m.OverwriteGrads()
								red := Start(ctx, c, m, nil)
								if zero {
									red = z.Start(ctx)
								}
								red.Attach()
								l, _ := m.ForwardBackward(batches[q], 1/float32(scored))
								if res.losses[s], err = red.Finish(l); err != nil {
									return err
								}
								var st optim.StepResult
								if zero {
									st, err = z.Step(ctx, lr)
								} else {
									st, err = o.Step(m, lr)
								}
								if err != nil {
									return err
								}
								res.norms[s] = st.GradNorm
							}
							res.w16 = slices.Clone(m.LowPrecisionParams())
							if zero {
								if err := z.SyncParams(ctx); err != nil {
									return err
								}
							}
							res.w = engine.HostView(m.Dev, m.Params.Arena)
							return nil
						}()
					}()
				}
				wg.Wait()
				for q, err := range errs {
					if err != nil {
						t.Fatalf("zero1 %v: rank %d: %v", zero, q, err)
					}
				}
				return out
			}
			want, got := run(false), run(true)
			for q := range tc.n {
				for s := range steps {
					if a, b := want[q].losses[s], got[q].losses[s]; a != b {
						t.Errorf("rank %d: step %d loss %v, unsharded %v", q, s, b, a)
					}
					if a, b := want[q].norms[s], got[q].norms[s]; math.Abs(a-b) > 1e-12*math.Abs(a) {
						t.Errorf("rank %d: step %d gradient norm %v, unsharded %v", q, s, b, a)
					}
				}
				tol := 0.0
				if tc.clip {
					tol = 1e-6
				}
				for i, x := range want[q].w {
					if y := got[q].w[i]; math.Abs(float64(x)-float64(y)) > tol {
						t.Fatalf("rank %d: weight %d is %v after %d steps, unsharded %v", q, i, y, steps, x)
					}
				}
				if len(got[q].w16) != len(want[q].w16) {
					t.Fatalf("rank %d: %d bf16 weights, unsharded %d", q, len(got[q].w16), len(want[q].w16))
				}
				for i, x := range want[q].w16 {
					if y := got[q].w16[i]; x != y && (!tc.clip || max(x, y)-min(x, y) > 1) {
						t.Fatalf("rank %d: bf16 weight %d is %#04x after %d steps, unsharded %#04x", q, i, y, steps, x)
					}
				}
			}
		})
	}
}

// Zero1Layout's pieces cover the arena after the front exactly once, each
// at an even offset of its bucket, no bucket straddling two of the
// ranges the Reducer hands over; the ranges sent in fp32 lie in their
// rank's piece and cover every tensor the passes read in fp32.
func TestZero1LayoutCoversTheArena(t *testing.T) {
	for _, tied := range []bool{false, true} {
		cfg := testCfg(t, tied)
		m := engine.New(cfg, openCPU(t, nil), engine.Options{BF16: true})
		specs, n := cfg.ParamSpecs(), len(m.Params.Arena)
		layers, rest := layerRanges(specs, n, cfg.NumHiddenLayers)
		ranges := append(append([][2]int{}, layers...), rest...)
		for _, ranks := range []int{2, 3, 4, 5} {
			for _, bucket := range []int{999, Bucket} {
				lay := NewZero1Layout(specs, n, cfg.NumHiddenLayers, embedRange(m), tied, true, ranks, bucket)
				if front := lay.Front; front != 0 && (tied || front != len(m.Params.Embed)) {
					t.Fatalf("tied %v: front %d", tied, front)
				}
				seen := make([]int, n)
				fp32 := make([]bool, n)
				for _, b := range lay.Buckets {
					inside := false
					for _, rg := range ranges {
						inside = inside || (rg[0] <= b.Lo && b.Hi <= rg[1])
					}
					if !inside || b.Hi-b.Lo > bucket {
						t.Fatalf("tied %v, %d ranks: bucket [%d, %d) is not within one reduced range of at most %d", tied, ranks, b.Lo, b.Hi, bucket)
					}
					for q := range ranks {
						lo, hi := b.Lo+b.At[q], b.Lo+b.At[q+1]
						if b.At[q]%2 != 0 || hi-lo != b.Counts[q] {
							t.Fatalf("tied %v, %d ranks: rank %d's piece [%d, %d) of bucket [%d, %d)", tied, ranks, q, lo, hi, b.Lo, b.Hi)
						}
						for i := lo; i < hi; i++ {
							seen[i]++
						}
						for _, rg := range b.FP32[q] {
							if rg[0] < lo || rg[1] > hi {
								t.Fatalf("tied %v, %d ranks: fp32 range %v outside rank %d's piece [%d, %d)", tied, ranks, rg, q, lo, hi)
							}
							for i := rg[0]; i < rg[1]; i++ {
								fp32[i] = true
							}
						}
					}
				}
				for i, c := range seen {
					if want := 1; i < lay.Front {
						want = 0
						if c != want {
							t.Fatalf("tied %v, %d ranks: front element %d is in %d pieces", tied, ranks, i, c)
						}
					} else if c != want {
						t.Fatalf("tied %v, %d ranks: element %d is in %d pieces", tied, ranks, i, c)
					}
				}
				for _, s := range specs {
					if len(s.Shape) == 2 && !(tied && s.Offset == embedRange(m)[0]) {
						continue
					}
					for i := max(s.Offset, lay.Front); i < s.Offset+s.Size(); i++ {
						if !fp32[i] {
							t.Fatalf("tied %v, %d ranks: %s element %d is read in fp32 but not sent", tied, ranks, s.Name, i)
						}
					}
				}
			}
		}
	}
}

// The memory plan of a Zero1 rank (Zero1Rank) is what the largest rank
// allocates through a counting device, exactly: the model, its
// activations, the optimizer state of the embeddings and its pieces
// (AdamW's two moments; LionW's one, OptimizerStates 1), and
// the all-gathers' scratch (exchange_scratch), plus the buffers the
// device and the collective keep themselves (attention scratch; the Gloo
// shim's reduce-scatter buffer, which the test group has not), after a
// step and a SyncParams. Buckets of 999 floats pad ranks' parts unevenly.
func TestZero1MemoryMatchesPlan(t *testing.T) {
	for _, tc := range []struct {
		n, bucket int
		opt       engine.Options
		tied      bool
	}{
		{2, 999, engine.Options{BF16: true}, false},
		{3, 999, engine.Options{BF16: true}, true},
		{3, 999, engine.Options{}, false},
		{2, Bucket, engine.Options{BF16: true}, false},
		{3, 999, engine.Options{BF16: true, CompactBF16: true}, false},
		{2, 999, engine.Options{BF16: true, Recompute: true}, false},
		{2, 999, engine.Options{BF16: true, OptimizerStates: 1}, false},
		{3, 999, engine.Options{OptimizerStates: 1}, true},
	} {
		t.Run(fmt.Sprintf("%d-ranks/bucket-%d/bf16-%v/compact-%v/tied-%v/recompute-%v/states-%d", tc.n, tc.bucket, tc.opt.BF16, tc.opt.CompactBF16, tc.tied, tc.opt.Recompute, tc.opt.OptimizerBuffers()), func(t *testing.T) {
			tc.opt.Rank = zero1Rank{tc.n, tc.bucket}
			checkZero1Plan(t, testCfg(t, tc.tied), tc.opt)
		})
	}
}

// Fit plans a Zero1 rank with Zero1Rank: where a rank's plan fits without
// recomputation and the whole state's does not, it turns on nothing (it
// turns on recomputation for the whole state), and the rank it fitted
// allocates what its plan says.
func TestZero1Fit(t *testing.T) {
	const B, T, n = 2, 12, 2
	cfg, dev := testCfg(t, false), openCPU(t, nil)
	opt := engine.Options{BF16: true}
	rank := opt
	rank.Rank = Zero1Rank(n, opt)
	need := cfg.MemoryEstimate(dev, rank, B, T)
	if whole := cfg.MemoryEstimate(dev, opt, B, T); whole <= need {
		t.Fatalf("the whole state's plan %d bytes, a rank's %d: want more", whole, need)
	}
	avail := 2<<30 + need // the budget keeps 2 GiB
	if got, _, err := cfg.Fit(dev, opt, B, T, avail); err != nil || !got.Recompute {
		t.Fatalf("Fit of the whole state: recompute %v, %v; want recomputation", got.Recompute, err)
	}
	got, notes, err := cfg.Fit(dev, rank, B, T, avail)
	if err != nil || len(notes) > 0 || got != rank {
		t.Fatalf("Fit of a rank = %+v, %v, %v; want it as asked", got, notes, err)
	}
	if got, _, err = cfg.Fit(dev, rank, B, T, avail-1); err != nil || !got.Recompute {
		t.Fatalf("Fit of a rank a byte short: recompute %v, %v; want recomputation", got.Recompute, err)
	}
	checkZero1Plan(t, cfg, got)
}

// A Zero1 rank's planner leaves a LoRA plan whole: Fit's refusal advises
// a LoRA run planned with the full run's options, Rank included.
func TestZero1RankLeavesLoRAPlan(t *testing.T) {
	cfg, dev := testCfg(t, false), openCPU(t, nil)
	opt := engine.Options{BF16: true}
	lora := opt
	lora.LoRA = &engine.LoRAConfig{Rank: 4, Alpha: 8}
	want := cfg.MemoryEstimate(dev, lora, 2, 12)
	lora.Rank = Zero1Rank(2, opt)
	if got := cfg.MemoryEstimate(dev, lora, 2, 12); got != want {
		t.Errorf("LoRA plan with a Zero1 rank's planner: %d bytes, want the plan without it, %d", got, want)
	}
}

// checkZero1Plan runs a step of Zero1 (opt.Rank: a zero1Rank; LionW
// when opt.OptimizerStates is 1, else AdamW) with micro-batches of 2×12
// tokens on counting devices and checks that the largest rank's peak is
// opt's plan, less what the device and the collective keep themselves.
func checkZero1Plan(t *testing.T, cfg *engine.Config, opt engine.Options) {
	t.Helper()
	const B, T = 2, 12
	z1 := opt.Rank.(zero1Rank)
	newRanges := optim.AdamWRanges(optim.DefaultAdamW)
	if opt.OptimizerStates == 1 {
		newRanges = optim.LionWRanges(optim.DefaultLionW, 1e-4)
	}
	h := newHub(z1.ranks)
	peaks := make([]int64, z1.ranks)
	errs := make([]error, z1.ranks)
	var wg sync.WaitGroup
	for q := range z1.ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dev := engine.NewCountingDevice(openCPU(t, nil))
			errs[q] = func() error {
				m := engine.New(cfg, dev, opt)
				m.InitRandom(7)
				z, err := newZero1(hubRank{h, q}, m, newRanges, z1.bucket)
				if err != nil {
					return err
				}
				ctx := context.Background()
				bt := testBatch(t, rand.New(rand.NewPCG(3, uint64(q))), B, T, cfg.VocabSize)
				m.OverwriteGrads()
				red := z.Start(ctx)
				red.Attach()
				l, _ := m.ForwardBackward(bt, 1/float32(bt.Scored()))
				if _, err := red.Finish(l); err != nil {
					return err
				}
				if _, err := z.Step(ctx, 1e-3); err != nil {
					return err
				}
				return z.SyncParams(ctx)
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
	dev := openCPU(t, nil)
	plan := cfg.MemoryPlan(dev, opt, B, T)
	var sum int64
	for _, b := range plan.Parts {
		sum += b
	}
	if sum != plan.PeakBytes {
		t.Errorf("parts add up to %d bytes, peak_bytes is %d", sum, plan.PeakBytes)
	}
	kept := plan.Parts[engine.PartCollectiveScratch] + engine.AttentionScratchFor(dev, opt.BF16, B, T, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim)
	if want := plan.PeakBytes - kept; slices.Max(peaks) != want {
		t.Errorf("ranks allocated at most %d bytes (%v), the plan %d less %d kept by the device and the collective = %d (parts %v)",
			slices.Max(peaks), peaks, plan.PeakBytes, kept, want, plan.Parts)
	}
	if plan.Parts[engine.PartExchangeScratch] == 0 || plan.Parts[engine.PartCollectiveScratch] == 0 {
		t.Errorf("no collective scratch planned: %v", plan.Parts)
	}
}
