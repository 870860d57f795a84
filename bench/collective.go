package bench

import (
	"context"
	"fmt"
	"time"

	"hone/collective"
	"hone/collective/gloo"
)

// CollectiveResult is the allreduce bandwidth of one group, as nccl-tests
// reports it: algorithm bandwidth is bytes over time; bus bandwidth scales
// it by 2(n-1)/n, the share of the data each link must carry in a ring
// allreduce, so it is comparable across group sizes and with link speed.
type CollectiveResult struct {
	Backend      string  `json:"backend"`
	Ranks        int     `json:"ranks"`
	Bytes        int64   `json:"bytes"`
	Iters        int     `json:"iters"`
	SecondsPerOp float64 `json:"seconds_per_op"` // median
	AlgBWGBps    float64 `json:"algbw_gb_per_s"` // GB = 1e9 bytes
	BusBWGBps    float64 `json:"busbw_gb_per_s"`
}

// CollectiveRank is one rank's part of the allreduce benchmark: it joins
// the group of cfg, warms up, then times iters allreduces of mb MiB of
// float32 each. Every rank returns the same medians (each op ends on all
// ranks at about the same time).
func CollectiveRank(ctx context.Context, cfg collective.Config, mb float64, iters int) (*CollectiveResult, error) {
	if mb <= 0 || iters < 1 {
		return nil, fmt.Errorf("bench collective: need --mb > 0 and --iters ≥ 1 (got %g, %d)", mb, iters)
	}
	g, err := gloo.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	n := int(mb * (1 << 20) / 4)
	buf := make([]float32, n)
	for i := range buf {
		buf[i] = 1
	}
	for range 2 { // warm-up: first-touch pages and TCP windows
		if err := g.AllReduce(ctx, buf); err != nil {
			return nil, err
		}
	}
	times := make([]float64, iters)
	for i := range times {
		if err := g.Barrier(ctx); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := g.AllReduce(ctx, buf); err != nil {
			return nil, err
		}
		times[i] = time.Since(t0).Seconds()
	}
	t := median(times)
	bytes := int64(n) * 4
	r := float64(g.Size())
	alg := float64(bytes) / t / 1e9
	return &CollectiveResult{Backend: "gloo-tcp", Ranks: g.Size(), Bytes: bytes, Iters: iters, SecondsPerOp: t,
		AlgBWGBps: alg, BusBWGBps: alg * 2 * (r - 1) / r}, nil
}
