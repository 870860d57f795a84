package bench

import (
	"errors"
	"fmt"

	"hone/engine"
)

// rowsPerRank is a rank's rows of a global batch over n ranks, as
// splitBatch deals them: global/n when n divides it, one row when n is
// more than global (with --batch n, named by the advice), else 0 (a
// split `bench train` refuses).
func rowsPerRank(global int) func(n int) int {
	return func(n int) int {
		switch {
		case global%n == 0:
			return global / n
		case n > global:
			return 1
		}
		return 0
	}
}

// ranksNeeded is the fewest ranks, with sharded parameters when more than
// one, whose rank fits avail with its share of the global batch and Fit's
// savings (engine.Config.RanksNeeded), and that rank's plan; 0 when none
// up to engine.MaxShardRanks does or the spec cannot shard its parameters.
func (s TrainSpec) ranksNeeded(dev engine.Device, opts engine.Options, global, from int, avail int64) (int, int64) {
	if s.checkSharded() != nil {
		return 0, 0
	}
	return s.Config.RanksNeeded(dev, opts, s.Seq, avail, from, rowsPerRank(global))
}

// adviseRanks adds to Fit's refusal err the fewest ranks (--ranks with
// --shard-parameters) whose rank would fit: opts are this rank's options
// before Fit, global the global batch, ranks the ranks it runs with.
func (s TrainSpec) adviseRanks(err error, dev engine.Device, opts engine.Options, global, ranks int, avail int64) {
	var fe *engine.FitError
	if !errors.As(err, &fe) {
		return
	}
	if avail <= 0 {
		avail = fe.Avail
	}
	sharded := s.ShardParameters && ranks > 1
	from := 2
	if sharded {
		from = ranks + 1
	}
	n, need := s.ranksNeeded(dev, opts, global, from, avail)
	if n == 0 {
		return
	}
	if !sharded && n <= ranks { // sharding these ranks' state is enough
		if n, need = s.ranksNeeded(dev, opts, global, ranks, avail); n != ranks {
			return
		}
		fe.Fits = append(fe.Fits, fmt.Sprintf("--shard-parameters (%.1f GiB per rank at %d ranks)", gibs(need), ranks))
		return
	}
	tip := fmt.Sprintf("--ranks %d --shard-parameters", n)
	if global%n != 0 {
		tip += fmt.Sprintf(" --batch %d", n)
	}
	more := ""
	if ranks > 1 {
		more = fmt.Sprintf("%d more ranks; ", n-ranks)
	}
	fe.Fits = append(fe.Fits, fmt.Sprintf("%s (%s%.1f GiB per rank)", tip, more, gibs(need)))
}

func gibs(b int64) float64 { return float64(b) / (1 << 30) }
