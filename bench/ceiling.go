package bench

import (
	"context"
	"math/rand/v2"
	"time"

	"hone/engine"
)

// Ceiling is the machine's measured matrix-product throughput through the
// device's own matmul: what a training step's model FLOPs/s is compared
// with (MFU).
type Ceiling struct {
	BF16 float64 `json:"bf16_gflop_per_s"`
	FP32 float64 `json:"fp32_gflop_per_s"`
	ISA  string  `json:"isa"`
}

// CeilingSize is the side of the square products Ceiling times: large
// enough that the matmul runs at its peak, small enough to take well
// under a second per precision.
const CeilingSize = 2048

// MeasureCeiling times n×n×n products c = a·bᵀ (a linear layer's layout)
// on dev in bf16 and fp32, best of reps after one warm-up each.
func MeasureCeiling(ctx context.Context, dev engine.Device, n, reps int, precisions ...string) (Ceiling, error) {
	if len(precisions) == 0 {
		precisions = []string{"bf16", "fp32"}
	}
	var c Ceiling
	if d, ok := dev.(interface{ ISA() string }); ok {
		c.ISA = d.ISA()
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
	best := func(run func()) (float64, error) {
		run()
		dev.Sync()
		var top float64
		for range reps {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
			start := time.Now()
			run()
			dev.Sync()
			top = max(top, flops/time.Since(start).Seconds()/1e9)
		}
		return top, nil
	}
	var err error
	for _, p := range precisions {
		switch p {
		case "bf16":
			a16, b16 := dev.AllocBF16(n*n), dev.AllocBF16(n*n)
			dev.ToBF16(a16, a)
			dev.ToBF16(b16, b)
			c.BF16, err = best(func() { dev.MatMulBF16(out, a16, b16, n, n, n, f) })
			dev.FreeBF16(a16)
			dev.FreeBF16(b16)
		case "fp32":
			c.FP32, err = best(func() { dev.MatMul(out, a, b, n, n, n, f) })
		}
		if err != nil {
			return c, err
		}
	}
	return c, nil
}
