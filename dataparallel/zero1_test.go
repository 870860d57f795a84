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
// (Zero1: rank q runs micro-batch q, each shard's gradients are reduced to
// its rank, the bf16 copy and the fp32 tensors read in fp32 go back) take
// the steps of the unsharded data-parallel ranks (Reducer, every rank
// updating everything): the same losses, and bit for bit the same weights
// (the bf16 copy the passes read and, after SyncParams, every fp32
// weight) when nothing clips. With clipping, the norm summed from the
// shards groups its terms otherwise, so the weights agree to rounding.
// The batches leave embedding rows untouched.
func TestZero1MatchesDataParallel(t *testing.T) {
	for _, tc := range []struct {
		n          int
		opt        engine.Options
		tied, clip bool
	}{
		{2, engine.Options{BF16: true}, false, false},
		{2, engine.Options{BF16: true}, false, true},
		{2, engine.Options{BF16: true}, true, false},
		{2, engine.Options{}, false, false},
		{3, engine.Options{BF16: true}, false, true},
		{3, engine.Options{BF16: true}, false, false},
		{2, engine.Options{BF16: true, CompactBF16: true}, false, false},
	} {
		t.Run(fmt.Sprintf("%d-ranks/bf16-%v/compact-%v/tied-%v/clip-%v", tc.n, tc.opt.BF16, tc.opt.CompactBF16, tc.tied, tc.clip), func(t *testing.T) {
			cfg := testCfg(t, tc.tied)
			r := rand.New(rand.NewPCG(3, 4))
			batches := make([]*engine.Batch, tc.n)
			scored := 0
			for i := range batches {
				batches[i] = testBatch(t, r, 2, 12, cfg.VocabSize/2)
				scored += batches[i].Scored()
			}
			ocfg := optim.DefaultAdamW
			ocfg.MaxGradNorm = 0
			if tc.clip {
				ocfg.MaxGradNorm = 1e-3 // every step clips
			}
			const steps, lr = 3, 1e-2
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
							var o *optim.AdamW
							var err error
							if zero {
								// Odd buckets: each rank sends its shard in
								// several, at odd offsets.
								z, err = newZero1(c, m, ocfg, 999)
							} else {
								o, err = optim.NewAdamW(m, ocfg)
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
