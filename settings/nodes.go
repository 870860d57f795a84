package settings

import (
	"fmt"
	"slices"
)

// Nodes is a run's default number of workers (ranks).
const Nodes = 1

// Sharding is a multi-node run's default: every rank holds the whole
// model and optimizer state (plain data parallelism).
const Sharding = "none"

// The accepted shardings, the default first: "optimizer" keeps on each
// rank the optimizer state (AdamW's moments, LionW's moment) of its 1/N
// of the parameters (ZeRO stage 1), "parameters" also the fp32
// parameters and gradients (ZeRO stage 3).
var shardings = []string{"none", "optimizer", "parameters"}

// Shardings are the accepted values of "sharding", the default first.
func Shardings() []string { return slices.Clone(shardings) }

func init() {
	help["nodes"] = "workers that train the run together, one rank each (data parallel over Gloo); at most the workers that worked the queue recently"
	help["sharding"] = "with nodes > 1, what each rank holds 1/N of: none (every rank the whole state), optimizer (the optimizer state, AdamW's or LionW's moments: ZeRO-1), " +
		"parameters (fp32 parameters, gradients and moments, or a LoRA's frozen base, fp32 or NF4, each layer gathered when used: ZeRO-3)"
}

// CheckNodes reports a node count below 1 (0 means the default).
func CheckNodes(v int) error {
	if v == 0 {
		return nil
	}
	return CheckCount("nodes", v, 1)
}

// CheckSharding reports an unknown sharding, and a sharding other than
// none for a single-node run (nodes 0 means the default, 1).
func CheckSharding(v string, nodes int) error {
	const s = "sharding"
	if v == "" || v == Sharding {
		return nil
	}
	if err := oneOf(s, v, shardings); err != nil {
		return err
	}
	if nodes <= 1 {
		return errorf(s, fmt.Sprintf("set nodes to 2 or more, or leave %s unset (%s)", s, Sharding),
			"%q splits the state across ranks, and the run has one node", v)
	}
	return nil
}
