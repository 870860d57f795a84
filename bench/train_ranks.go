package bench

import (
	"context"
	"fmt"
	"runtime/debug"

	"hone/dataparallel"
	"hone/engine"
	"hone/train"
)

// Data-parallel training benchmark: each rank (process) trains its share
// of the global batch and the gradients are summed across ranks while the
// backward pass runs (dataparallel.Reducer), as train.RunDistributed does.

func (s TrainSpec) ranks() int {
	if s.Coll == nil {
		return 1
	}
	return s.Coll.Size()
}

func (s TrainSpec) rank() int {
	if s.Coll == nil {
		return 0
	}
	return s.Coll.Rank()
}

// splitBatch makes s.Batch this rank's share and returns the global batch.
func (s *TrainSpec) splitBatch() (int, error) {
	n := s.ranks()
	if s.Batch%n != 0 {
		return 0, fmt.Errorf("bench: batch %d does not split evenly over %d ranks", s.Batch, n)
	}
	global := s.Batch
	s.Batch /= n
	return global, nil
}

// MergeRanks combines the ranks' results: throughput is rank 0's (every
// rank steps together, and Batch is the global batch), memory the
// largest rank's, CPU time the ranks' sum, and MFU all ranks' FLOPs over
// the sum of the ranks' ceilings.
func MergeRanks(results []*TrainResult) *TrainResult {
	out := *results[0]
	for _, r := range results[1:] {
		out.PeakRSSBytes = max(out.PeakRSSBytes, r.PeakRSSBytes)
		out.StepCPUSeconds += r.StepCPUSeconds
	}
	if c := mergeCeilings(results); c != nil {
		out.Ceiling, out.CeilingGFLOPs = c, c.GFLOPs
		out.MFU = mfu(out.GFLOPs, c.GFLOPs)
	}
	return &out
}

// zero1Stepper is full fine-tuning with ts's optimizer state sharded
// across the ranks (dataparallel.Zero1, as train.DistOptions.ShardOptimizer).
func (s TrainSpec) zero1Stepper(m *engine.Model, ts train.Spec) (func(*engine.Batch, float32) (float64, int, error), error) {
	z, err := dataparallel.NewZero1(s.Coll, m, ts.NewRanges())
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	return func(bt *engine.Batch, scale float32) (float64, int, error) {
		m.OverwriteGrads()
		red := z.Start(ctx)
		red.Attach()
		sum, n := m.ForwardBackward(bt, scale)
		if _, err := red.Finish(sum); err != nil {
			return 0, 0, err
		}
		_, err := z.Step(ctx, ts.LearningRate)
		return sum, n, err
	}, nil
}

// sharded says whether the spec shards the parameters (ZeRO stage 3).
func (s TrainSpec) sharded() bool { return s.ShardParameters && s.ranks() > 1 }

// checkSharded refuses what sharded parameters do not support.
func (s TrainSpec) checkSharded() error {
	return s.Config.CheckShardable()
}

// shardedStepper is full fine-tuning with the parameters, gradients and
// moments sharded across the ranks (dataparallel.Sharded): each rank
// initialises only its shards.
func (s TrainSpec) shardedStepper(m *engine.Model, ts train.Spec, res *TrainResult) (func(*engine.Batch, float32) (float64, int, error), error) {
	sh, err := dataparallel.NewSharded(s.Coll, m)
	if err != nil {
		return nil, err
	}
	if m.Opt.QuantizeBase != "" { // the unquantized tensors, and this rank's chunks of the NF4 layers
		m.InitRandom(s.Seed)
	} else {
		engine.InitRandomRanges(m.Config, s.Seed, sh.Ranges(), sh.Chunks(sh.P))
	}
	debug.FreeOSMemory() // the whole tensors it filled from: not part of a rank's training footprint
	ctx := context.Background()
	if lc := m.Opt.LoRA; lc != nil {
		// The adapter is whole on every rank; its gradients are summed
		// after the passes (the gathers use the group meanwhile).
		a, opt, err := s.attachAdapter(m, *lc, ts, res)
		if err != nil {
			return nil, err
		}
		var step uint64
		return func(bt *engine.Batch, scale float32) (float64, int, error) {
			sh.Begin(ctx)
			a.ZeroGrad()
			red := dataparallel.Start(ctx, s.Coll, m, a)
			step++
			sum, n := m.ForwardBackwardDropout(bt, scale, s.Seed<<20|step)
			if err := sh.Err(); err != nil {
				return 0, 0, err
			}
			if _, err := red.Finish(sum); err != nil {
				return 0, 0, err
			}
			_, err := opt.StepAdapter(a, ts.LearningRate)
			return sum, n, err
		}, nil
	}
	opt, err := sh.NewOptimizer(ts.NewRanges())
	if err != nil {
		return nil, err
	}
	return func(bt *engine.Batch, scale float32) (float64, int, error) {
		sh.Begin(ctx)
		sh.ZeroGrad()
		sum, n := m.ForwardBackward(bt, scale)
		if err := sh.Err(); err != nil {
			return 0, 0, err
		}
		if _, err := dataparallel.SumLoss(ctx, s.Coll, sum); err != nil {
			return 0, 0, err
		}
		_, err := sh.Step(ctx, opt, ts.LearningRate)
		return sum, n, err
	}, nil
}
