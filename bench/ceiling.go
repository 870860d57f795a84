package bench

import (
	"context"
	"math/rand/v2"
	"time"

	"hone/engine"
)

// Ceiling is the machine's measured matrix-product throughput through the
// device's own matmul: what a training step's model FLOPs/s is compared
// with (MFU). Each precision's figure is its fastest product.
type Ceiling struct {
	BF16 float64 `json:"bf16_gflop_per_s,omitempty"`
	FP32 float64 `json:"fp32_gflop_per_s,omitempty"`
	ISA  string  `json:"isa"`
	// How it was measured: products of Size×Size×Size on Threads
	// threads (0: the device does not say), timed one at a time for at
	// least MinSeconds per precision after one untimed product;
	// BF16Products and FP32Products are how many were timed.
	Threads      int     `json:"threads,omitempty"`
	Size         int     `json:"size"`
	MinSeconds   float64 `json:"min_seconds"`
	BF16Products int     `json:"bf16_products,omitempty"`
	FP32Products int     `json:"fp32_products,omitempty"`
	// PeakBF16 and PeakFP32 are the vector units' measured throughput on
	// the same threads with operands in registers (the device's
	// PeakGFLOPs; absent where it has none or the CPU lacks the
	// instructions): what no product can exceed, measured rather than
	// derived from a clock rate. The ceiling over it is how close the
	// device's matmul comes.
	PeakBF16 float64 `json:"peak_bf16_gflop_per_s,omitempty"`
	PeakFP32 float64 `json:"peak_fp32_gflop_per_s,omitempty"`
}

// peaker is a device that measures its vector peak (cpu.Device).
type peaker interface {
	PeakGFLOPs(precision string, minTime time.Duration) (float64, bool)
}

// CeilingSize is the side of the square products Ceiling times: large
// enough that the matmul runs at its peak.
const CeilingSize = 2048

// CeilingTime is how long each precision is timed by default. A fixed
// count of 5 products (0.25 s in bf16 on 2 cores) let one busy moment of
// the machine halve the ceiling; the best of a second's products does not
// depend on one moment.
const CeilingTime = time.Second

// CeilingSpec says what MeasureCeiling times.
type CeilingSpec struct {
	Size        int           // side of the square products; CeilingSize when 0
	MinTime     time.Duration // each precision is timed at least this long; CeilingTime when 0
	MinProducts int           // and at least this many products; 3 when 0
	Precisions  []string      // "bf16", "fp32"; both when empty
	Peak        bool          // also time the vector peak (Ceiling.PeakBF16, PeakFP32)

	now func() time.Time // the clock; time.Now when nil (tests inject one)
}

// MeasureCeiling times n×n×n products c = a·bᵀ (a linear layer's layout)
// on dev: per precision one untimed product (it creates the primitive and
// touches c's pages), then products one at a time until spec.MinTime has
// passed and spec.MinProducts were timed; the fastest one counts. The
// products run on the device's threads, the same as its training steps.
func MeasureCeiling(ctx context.Context, dev engine.Device, spec CeilingSpec) (Ceiling, error) {
	n, minTime, minProducts, now := spec.Size, spec.MinTime, spec.MinProducts, spec.now
	if n <= 0 {
		n = CeilingSize
	}
	if minTime <= 0 {
		minTime = CeilingTime
	}
	if minProducts <= 0 {
		minProducts = 3
	}
	if now == nil {
		now = time.Now
	}
	precisions := spec.Precisions
	if len(precisions) == 0 {
		precisions = []string{"bf16", "fp32"}
	}
	c := Ceiling{Size: n, MinSeconds: minTime.Seconds()}
	if d, ok := dev.(interface{ ISA() string }); ok {
		c.ISA = d.ISA()
	}
	if d, ok := dev.(interface{ Threads() int }); ok {
		c.Threads = d.Threads()
	}
	r := rand.New(rand.NewPCG(1, 2))
	host := make([]float32, n*n)
	for i := range host {
		host[i] = float32(r.NormFloat64())
	}
	a, b, out := dev.Alloc(n*n), dev.Alloc(n*n), dev.Alloc(n*n)
	defer dev.Free(a)
	defer dev.Free(b)
	defer dev.Free(out)
	dev.Upload(a, host)
	dev.Upload(b, host)
	flops := 2 * float64(n) * float64(n) * float64(n)
	f := engine.MatMulFlags{TransB: true}
	best := func(run func()) (top float64, products int, err error) {
		run()
		dev.Sync()
		start := now()
		for products < minProducts || now().Sub(start) < minTime {
			if err := ctx.Err(); err != nil {
				return 0, products, err
			}
			t0 := now()
			run()
			dev.Sync()
			products++
			if d := now().Sub(t0).Seconds(); d > 0 {
				top = max(top, flops/d/1e9)
			}
		}
		return top, products, nil
	}
	var err error
	for _, p := range precisions {
		if pk, ok := dev.(peaker); ok && spec.Peak && spec.now == nil {
			g, _ := pk.PeakGFLOPs(p, minTime/5)
			if p == "bf16" {
				c.PeakBF16 = g
			} else {
				c.PeakFP32 = g
			}
		}
		switch p {
		case "bf16":
			a16, b16 := dev.AllocBF16(n*n), dev.AllocBF16(n*n)
			dev.ToBF16(a16, a)
			dev.ToBF16(b16, b)
			c.BF16, c.BF16Products, err = best(func() { dev.MatMulBF16(out, a16, b16, n, n, n, f) })
			dev.FreeBF16(a16)
			dev.FreeBF16(b16)
		case "fp32":
			c.FP32, c.FP32Products, err = best(func() { dev.MatMul(out, a, b, n, n, n, f) })
		}
		if err != nil {
			return c, err
		}
	}
	return c, nil
}

// GFLOPs is the ceiling of precision ("bf16" or "fp32"), how many
// products were timed for it, and the vector peak (0 if not measured).
func (c Ceiling) GFLOPs(precision string) (gflops float64, products int, peak float64) {
	if precision == "bf16" {
		return c.BF16, c.BF16Products, c.PeakBF16
	}
	return c.FP32, c.FP32Products, c.PeakFP32
}

// TrainCeiling is the ceiling a training benchmark's MFU is measured
// against, and how: the device's products in the step's precision, on the
// step's threads, timed before the warm-up step and again after the timed
// steps, the larger counting (a busy moment of a shared machine lowers one
// of them). With ranks every rank times its own at the same moment as the
// others (they share the machine as their steps do), and the ceiling is
// the ranks' sum.
type TrainCeiling struct {
	GFLOPs       float64   `json:"gflop_per_s"`
	Precision    string    `json:"precision"`
	Threads      int       `json:"threads"` // per rank
	Size         int       `json:"size"`
	MinSeconds   float64   `json:"min_seconds"` // per measurement
	BeforeGFLOPs float64   `json:"before_gflop_per_s"`
	AfterGFLOPs  float64   `json:"after_gflop_per_s"`
	Products     int       `json:"products"`                   // timed, both measurements, all ranks
	PeakGFLOPs   float64   `json:"peak_gflop_per_s,omitempty"` // Ceiling.PeakBF16 or PeakFP32, before the steps
	RankGFLOPs   []float64 `json:"rank_gflop_per_s,omitempty"` // with ranks: each rank's ceiling
}

// trainCeiling is the ceiling of one process from its two measurements.
func trainCeiling(precision string, before, after Ceiling) *TrainCeiling {
	b, nb, peak := before.GFLOPs(precision)
	a, na, _ := after.GFLOPs(precision)
	return &TrainCeiling{GFLOPs: max(b, a), Precision: precision, Threads: before.Threads, Size: before.Size,
		MinSeconds: before.MinSeconds, BeforeGFLOPs: b, AfterGFLOPs: a, Products: nb + na, PeakGFLOPs: peak}
}

// setMFU fills r's MFU fields from this process's ceiling. r.GFLOPs counts
// every rank's tokens (Batch is the global batch), and this process did
// its 1/ranks share of them, so that share is what its ceiling is
// compared with; MergeRanks compares the sum with the ranks' sum.
func (r *TrainResult) setMFU(c *TrainCeiling, isa string, ranks int) {
	r.Ceiling, r.CeilingGFLOPs, r.ISA = c, c.GFLOPs, isa
	r.MFU = mfu(r.GFLOPs/float64(max(ranks, 1)), c.GFLOPs)
}

// mfu is model FLOPs/s over the ceiling; 0 without a ceiling.
func mfu(gflops, ceiling float64) float64 {
	if ceiling <= 0 {
		return 0
	}
	return gflops / ceiling
}

// mergeCeilings is the ranks' ceiling: their sums (they ran at the same
// time, each on its share of the cores), with each rank's own listed.
func mergeCeilings(results []*TrainResult) *TrainCeiling {
	if results[0].Ceiling == nil {
		return nil
	}
	out := *results[0].Ceiling
	out.GFLOPs, out.BeforeGFLOPs, out.AfterGFLOPs, out.Products, out.PeakGFLOPs = 0, 0, 0, 0, 0
	out.RankGFLOPs = nil
	for _, r := range results {
		c := r.Ceiling
		if c == nil {
			return nil
		}
		out.GFLOPs += c.GFLOPs
		out.BeforeGFLOPs += c.BeforeGFLOPs
		out.AfterGFLOPs += c.AfterGFLOPs
		out.Products += c.Products
		out.PeakGFLOPs += c.PeakGFLOPs
		out.RankGFLOPs = append(out.RankGFLOPs, c.GFLOPs)
	}
	return &out
}
