package train

import (
	"errors"
	"fmt"

	"hone/engine"
)

// OnNodes returns s planned as one of the n ranks (nodes) of a run: a
// refusal for memory then says how many more nodes would fit. With
// sharded parameters, ShardedOver also divides the state.
func (s Spec) OnNodes(n int) Spec {
	s.nodes = n
	return s
}

// runNodes is the number of nodes the run trains on (1 unless OnNodes,
// ShardedOver or a data-parallel group says otherwise).
func (s Spec) runNodes() int { return max(1, s.nodes, s.shardRanks) }

// shardable reports whether a run of s could shard its parameters over
// nodes > 1: what the model allows (not DBRX).
func (s Spec) shardable(cfg *engine.Config) bool { return cfg.CheckShardable() == nil }

// nodesFor is the fewest nodes, from `from`, whose rank fits avail at
// T-token rows with the parameters sharded over them, and that rank's
// plan; 0 when none does or the run cannot shard its parameters. Every
// rank trains BatchRows rows per micro-batch (micro-batches are dealt to
// the ranks), so only the state divides.
func nodesFor(spec Spec, cfg *engine.Config, dev engine.Device, opts engine.Options, T int, avail int64, from int) (int, int64) {
	if !spec.shardable(cfg) {
		return 0, 0
	}
	return cfg.RanksNeeded(dev, opts, T, avail, max(from, 2), func(int) int { return spec.BatchRows })
}

// adviseNodes adds to Fit's refusal err (of opts at T-token rows) the
// fewest nodes with "sharding": "parameters" whose ranks would fit, and
// how many more than the run has.
func adviseNodes(err error, spec Spec, cfg *engine.Config, dev engine.Device, opts engine.Options, T int, avail int64) {
	var fe *engine.FitError
	if !errors.As(err, &fe) {
		return
	}
	if avail <= 0 {
		avail = fe.Avail
	}
	nodes, sharded := spec.runNodes(), spec.shardRanks > 1
	from := 2
	if sharded {
		from = nodes + 1
	}
	n, need := nodesFor(spec, cfg, dev, opts, T, avail, from)
	if n == 0 {
		return
	}
	if !sharded && n <= nodes { // sharding the run's nodes is enough
		if n, need = nodesFor(spec, cfg, dev, opts, T, avail, nodes); n != nodes {
			return
		}
		fe.Fits = append(fe.Fits, fmt.Sprintf(`"sharding": "parameters" on the run's %d nodes (%.1f GiB per rank)`, nodes, gib(need)))
		return
	}
	more := ""
	if nodes > 1 {
		more = fmt.Sprintf("%d more; ", n-nodes)
	}
	fe.Fits = append(fe.Fits, fmt.Sprintf(`"nodes": %d with "sharding": "parameters" (%s%.1f GiB per rank)`, n, more, gib(need)))
}

// longerOnNodes says, for a default context length shortened to chosen
// tokens to fit, how more nodes with sharded parameters would allow a
// longer one: the fewest that fit the model's maximum, else twice the
// run's nodes when that allows more; "" when they would not help.
func longerOnNodes(spec Spec, cfg *engine.Config, dev engine.Device, opts engine.Options, chosen, maxT int, avail int64) string {
	nodes, sharded := spec.runNodes(), spec.shardRanks > 1
	from := 2
	if sharded {
		from = nodes + 1
	}
	if n, need := nodesFor(spec, cfg, dev, opts, maxT, avail, from); n > 0 {
		return fmt.Sprintf(`; "nodes": %d with "sharding": "parameters" would fit the maximum (%.1f GiB per rank)`, n, gib(need))
	}
	if !spec.shardable(cfg) {
		return ""
	}
	n := max(2, 2*nodes)
	o := opts
	o.ShardRanks = n
	if l := cfg.LongestContext(dev, o, spec.BatchRows, maxT, avail); l > chosen {
		if l > 256 {
			l = l / 128 * 128
		}
		if l > chosen {
			return fmt.Sprintf(`; "nodes": %d with "sharding": "parameters" would allow %d tokens`, n, l)
		}
	}
	return ""
}
