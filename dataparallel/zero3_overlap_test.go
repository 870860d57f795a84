package dataparallel

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hone/engine"
	"hone/optim"
)

// slowRank is a hub rank whose all-gathers read their input at once,
// first poison their output with NaN and whose collectives take a moment:
// a part used before its gather finished, a gather of parameters not yet
// updated, a prefetch into a buffer still in use, or a gradient buffer
// written before its reduce-scatter read it shows in the results.
type slowRank struct{ hubRank }

func (r slowRank) AllGather(ctx context.Context, out, in []float32) error {
	in = append([]float32(nil), in...)
	nan := float32(math.NaN())
	for i := range out {
		out[i] = nan
	}
	time.Sleep(200 * time.Microsecond)
	return r.hubRank.AllGather(ctx, out, in)
}

func (r slowRank) ReduceScatter(ctx context.Context, buf []float32, counts []int) error {
	time.Sleep(200 * time.Microsecond)
	return r.hubRank.ReduceScatter(ctx, buf, counts)
}

// syncHooks are the hooks without overlap: no prefetch (Step's gathered
// one is not used), and each reduce-scatter waited for as it is started
// (the synchronous schedule).
type syncHooks struct{ *Sharded }

func (h syncHooks) Prefetch(int, []float32)     {}
func (h syncHooks) PrefetchNext(int, []float32) {}
func (h syncHooks) Gather(p int, use engine.Use, params, grads []float32) {
	h.pre = nil
	h.Sharded.Gather(p, use, params, grads)
}
func (h syncHooks) Release(p int, use engine.Use, grads []float32) {
	h.Sharded.Release(p, use, grads)
	_ = h.Sharded.Err()
}

// countHooks counts the prefetches the model asks for, the passes whose
// first gather (the embeddings') was issued by the pass before, before
// that pass's last reduce-scatter (the embeddings' gradient; a LoRA base
// has none), and so before the pass waited on it, and the passes whose
// first gather was issued after that, by the optimizer step before them.
type countHooks struct {
	*Sharded
	n, early, stepped *atomic.Int64
	start             bool // the model's next Gather is a pass's first
	released          int  // the op number of the last reduce-scatter
}

func (h *countHooks) Prefetch(p int, params []float32) {
	h.n.Add(1)
	h.Sharded.Prefetch(p, params)
}

func (h *countHooks) Gather(p int, use engine.Use, params, grads []float32) {
	if h.start {
		h.start = false
		if pre := h.pre; pre != nil && pre.p == p && (h.frozen || pre.seq < h.released) {
			h.early.Add(1)
		} else if pre != nil && pre.p == p {
			h.stepped.Add(1)
		}
	}
	h.Sharded.Gather(p, use, params, grads)
}

func (h *countHooks) Release(p int, use engine.Use, grads []float32) {
	h.Sharded.Release(p, use, grads)
	if use&engine.UseGrads != 0 && !h.frozen {
		h.released = h.issued
	}
}

// Sharded steps with the gathers prefetched and the reduce-scatters
// overlapped equal, bit for bit, the same steps run synchronously: the
// same collectives on the same buffers, only their timing differs. The
// ranks' collectives are slowed and the gathers poisoned, so a use before
// a gather finished or a prefetch of the wrong part would differ (or be
// NaN). Every layer order, tied embeddings, bf16, a LoRA base and an NF4
// one (QLoRA, its layers' NF4 data gathered). Each step's second pass
// finds its first gather started by the first pass, and (parameters
// trained) each pass after a step finds it started by the step
// (countHooks).
func TestShardedOverlapMatchesSynchronous(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		opt  engine.Options
		tied bool
		lora bool
	}{
		{"plain", 2, engine.Options{}, false, false},
		{"recompute", 3, engine.Options{Recompute: true}, false, false},
		{"checkpoints", 2, engine.Options{Recompute: true, CheckpointEvery: 2, MLPChunk: 8}, false, false},
		{"tied", 3, engine.Options{}, true, false},
		{"checkpoints-tied", 2, engine.Options{Recompute: true, CheckpointEvery: 3, LossChunk: 8}, true, false},
		{"bf16", 2, engine.Options{BF16: true, CompactBF16: true}, false, false},
		{"lora", 2, engine.Options{}, false, true},
		{"lora-checkpoints-tied", 3, engine.Options{Recompute: true, CheckpointEvery: 2}, true, true},
		{"qlora", 2, engine.Options{QuantizeBase: engine.QuantizeNF4}, false, true},
		{"qlora-bf16-checkpoints", 3, engine.Options{QuantizeBase: engine.QuantizeNF4, BF16: true, Recompute: true, CheckpointEvery: 3}, true, true},
	} {
		t.Run(fmt.Sprintf("%s/%d-ranks", tc.name, tc.n), func(t *testing.T) {
			cfg := testCfg(t, tc.tied)
			r := rand.New(rand.NewPCG(5, 6))
			const micro, steps, lr = 2, 3, 1e-2
			batches := make([][]*engine.Batch, tc.n)
			scored := 0
			for q := range batches {
				for range micro {
					bt := testBatch(t, r, 2, 16, cfg.VocabSize)
					batches[q] = append(batches[q], bt)
					scored += bt.Scored()
				}
			}
			// run trains on n slowed ranks and returns rank 0's losses,
			// every rank's trained state (parameter shards or adapter)
			// and rank 0's logits after training.
			run := func(overlap bool) ([]float64, [][]float32, []float32, int64, int64, int64) {
				h := newHub(tc.n)
				losses := make([]float64, steps)
				state := make([][]float32, tc.n)
				var logits []float32
				var prefetches, early, stepped atomic.Int64
				errs := make([]error, tc.n)
				var wg sync.WaitGroup
				for q := range tc.n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[q] = func() error {
							c := slowRank{hubRank{h, q}}
							opt := tc.opt
							opt.ShardRanks = tc.n
							var lc *engine.LoRAConfig
							if tc.lora {
								lc = &engine.LoRAConfig{Rank: 4, Alpha: 8}
								opt.LoRA = lc
							}
							m := engine.New(cfg, openCPU(t, nil), opt)
							sh, err := NewSharded(c, m)
							if err != nil {
								return err
							}
							var count *countHooks
							if overlap {
								count = &countHooks{Sharded: sh, n: &prefetches, early: &early, stepped: &stepped}
								m.Shards = count
							} else {
								m.Shards = syncHooks{sh}
							}
							if opt.QuantizeBase != "" { // this rank's chunks of the NF4 layers
								m.InitRandom(7)
							} else {
								engine.InitRandomRanges(cfg, 7, sh.Ranges(), sh.Chunks(sh.P))
							}
							ctx := context.Background()
							var a *engine.Adapter
							var step func() error
							if lc != nil {
								if a, err = engine.NewAdapter(cfg, m.Dev, *lc); err != nil {
									return err
								}
								a.InitPEFT(3)
								if err := m.Attach(a); err != nil {
									return err
								}
								o, err := optim.NewAdamWAdapter(a, optim.DefaultAdamW)
								if err != nil {
									return err
								}
								step = func() error { _, err := o.StepAdapter(a, lr); return err }
							} else {
								o, err := sh.NewOptimizer(optim.AdamWRanges(optim.DefaultAdamW))
								if err != nil {
									return err
								}
								step = func() error { _, err := sh.Step(ctx, o, lr); return err }
							}
							for s := range steps {
								sh.Begin(ctx)
								sh.Passes(len(batches[q]))
								sh.ZeroGrad()
								var red *Reducer
								if a != nil {
									a.ZeroGrad()
									red = Start(ctx, c, m, a)
								}
								var sum float64
								for _, bt := range batches[q] {
									if count != nil {
										count.start = true
									}
									l, _ := m.ForwardBackward(bt, 1/float32(scored))
									sum += l
									if err := sh.Err(); err != nil {
										return err
									}
								}
								if red != nil {
									sum, err = red.Finish(sum)
								} else {
									sum, err = SumLoss(ctx, c, sum)
								}
								if err != nil {
									return err
								}
								if q == 0 {
									losses[s] = sum
								}
								if err := step(); err != nil {
									return err
								}
							}
							if count != nil {
								count.start = true
							}
							l := m.Logits(batches[0][0])
							if err := sh.Err(); err != nil {
								return err
							}
							if q == 0 {
								logits = l
							}
							if a != nil {
								state[q] = engine.HostView(m.Dev, a.Params)
							} else {
								state[q] = append([]float32(nil), sh.P...)
							}
							return nil
						}()
					}()
				}
				wg.Wait()
				for q, err := range errs {
					if err != nil {
						t.Fatalf("overlap %v, rank %d: %v", overlap, q, err)
					}
				}
				return losses, state, logits, prefetches.Load(), early.Load(), stepped.Load()
			}
			wantLoss, wantState, wantLogits, _, _, _ := run(false)
			gotLoss, gotState, gotLogits, prefetched, early, stepped := run(true)
			if prefetched == 0 {
				t.Fatal("the model prefetched no part")
			}
			if want := int64(tc.n * steps * (micro - 1)); early != want {
				t.Errorf("%d passes found their first gather issued by the pass before, want %d", early, want)
			}
			if want := int64(tc.n * steps); tc.lora {
				if stepped != 0 {
					t.Errorf("%d passes found their first gather issued by a LoRA step (the base does not change)", stepped)
				}
			} else if stepped != want {
				// Steps 2 to steps and the logits after the last.
				t.Errorf("%d passes found their first gather issued by the step before, want %d", stepped, want)
			}
			for s := range steps {
				if math.IsNaN(gotLoss[s]) || math.Float64bits(gotLoss[s]) != math.Float64bits(wantLoss[s]) {
					t.Errorf("step %d: loss %.17g overlapped, %.17g synchronous", s+1, gotLoss[s], wantLoss[s])
				}
			}
			for q := range tc.n {
				if i := firstBitDiff(gotState[q], wantState[q]); i >= 0 {
					t.Errorf("rank %d: trained state differs at %d: %g overlapped, %g synchronous", q, i, gotState[q][i], wantState[q][i])
				}
			}
			if i := firstBitDiff(gotLogits, wantLogits); i >= 0 {
				t.Errorf("logits differ at %d: %g overlapped, %g synchronous", i, gotLogits[i], wantLogits[i])
			}
		})
	}
}

// firstBitDiff is the first index where a and b differ in bits (-1: none).
func firstBitDiff(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}
