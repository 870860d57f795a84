package dataparallel

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"hone/engine"
	"hone/optim"
)

// Sharded steps called the way train's unsharded path calls the model
// (OverwriteGrads before the step's micro-batches, FuseGradNorm before the
// last) equal unsharded steps run that way, with several micro-batches a
// step and clipping on: a sharded model's OverwriteGrads must be ZeroGrad
// (each part's Gather zeroes its gradient buffer) and its FuseGradNorm
// nothing (Release takes the gradients before a layer's term could be
// summed), so losses, clipping norms and weights agree.
func TestShardedOverwriteGradsFusedNormMatchUnsharded(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		opt  engine.Options
		tied bool
	}{
		{"plain", 2, engine.Options{}, false},
		{"tied-recompute", 2, engine.Options{Recompute: true}, true},
		{"bf16-checkpoints", 2, engine.Options{BF16: true, CompactBF16: true, Recompute: true, CheckpointEvery: 2, MLPChunk: 8}, false},
	} {
		t.Run(fmt.Sprintf("%s/%d-ranks", tc.name, tc.n), func(t *testing.T) {
			const micro, steps, lr = 2, 3, 1e-2
			cfg := testCfg(t, tc.tied)
			r := rand.New(rand.NewPCG(3, 4))
			batches := make([][]*engine.Batch, tc.n) // per rank, its micro-batches
			scored := 0
			for q := range batches {
				for range micro {
					bt := testBatch(t, r, 2, 16, cfg.VocabSize)
					batches[q] = append(batches[q], bt)
					scored += bt.Scored()
				}
			}
			ocfg := optim.DefaultAdamW
			ocfg.MaxGradNorm = 1e-3 // every step clips: its norm scales the update

			ref := engine.New(cfg, openCPU(t, nil), tc.opt)
			ref.InitRandom(7)
			o, err := optim.NewAdamW(ref, ocfg)
			if err != nil {
				t.Fatal(err)
			}
			var refLoss, refNorm [steps]float64
			for s := range steps {
				ref.OverwriteGrads()
				for q := range batches {
					for i, bt := range batches[q] {
						if q == len(batches)-1 && i == micro-1 {
							ref.FuseGradNorm()
						}
						l, _ := ref.ForwardBackward(bt, 1/float32(scored))
						refLoss[s] += l
					}
				}
				res, err := o.Step(ref, lr)
				if err != nil {
					t.Fatal(err)
				}
				if !res.Clipped {
					t.Fatalf("step %d: norm %g not clipped at %g", s+1, res.GradNorm, ocfg.MaxGradNorm)
				}
				refNorm[s] = res.GradNorm
			}
			want := engine.HostView(ref.Dev, ref.Params.Arena)

			h := newHub(tc.n)
			got := make([]float32, cfg.NumParams())
			losses := make([][steps]float64, tc.n)
			norms := make([][steps]float64, tc.n)
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
						o, err := sh.NewOptimizer(optim.AdamWRanges(ocfg))
						if err != nil {
							return err
						}
						ctx := context.Background()
						for s := range steps {
							sh.Begin(ctx)
							sh.ZeroGrad()
							m.OverwriteGrads()
							var sum float64
							for i, bt := range batches[q] {
								if i == micro-1 {
									m.FuseGradNorm()
								}
								l, _ := m.ForwardBackward(bt, 1/float32(scored))
								sum += l
								if err := sh.Err(); err != nil {
									return err
								}
							}
							if losses[q][s], err = SumLoss(ctx, c, sum); err != nil {
								return err
							}
							res, err := sh.Step(ctx, o, lr)
							if err != nil {
								return err
							}
							norms[q][s] = res.GradNorm
						}
						var dst []float32
						if q == 0 {
							dst = got
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
			// As in TestShardedStepsMatchUnsharded: bf16 rounding flips
			// from the summation order grow from step 2 on.
			tol, weightTol := []float64{1e-6, 1e-6, 1e-6}, 1e-5
			if tc.opt.BF16 {
				tol, weightTol = []float64{1e-6, 1e-5, 1e-3}, lr
			}
			for s := range steps {
				if d := math.Abs(losses[0][s] - refLoss[s]); d > tol[s]*refLoss[s] {
					t.Errorf("step %d: loss %.9g sharded, %.9g unsharded", s+1, losses[0][s], refLoss[s])
				}
				if d := math.Abs(norms[0][s] - refNorm[s]); d > 1e-5*refNorm[s] && !(tc.opt.BF16 && s > 0) {
					t.Errorf("step %d: gradient norm %.9g sharded, %.9g unsharded", s+1, norms[0][s], refNorm[s])
				}
			}
			var worst float64
			for i := range want {
				worst = max(worst, math.Abs(float64(want[i])-float64(got[i])))
			}
			if worst > weightTol {
				t.Errorf("weights after %d steps differ by up to %g, want ≤ %g", steps, worst, weightTol)
			}
		})
	}
}
