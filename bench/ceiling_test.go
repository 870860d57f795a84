package bench

import (
	"context"
	"math"
	"testing"
	"time"

	"hone/engine"
)

// fakeDevice runs MeasureCeiling's products on a fake clock: each product
// advances it by the next of durs (the last one repeating).
type fakeDevice struct {
	engine.Device // nil: only what MeasureCeiling calls is here
	clock         time.Time
	durs          []time.Duration
	products      int
	threads       int
}

func (f *fakeDevice) Alloc(n int) []float32      { return make([]float32, n) }
func (f *fakeDevice) AllocBF16(n int) []uint16   { return make([]uint16, n) }
func (f *fakeDevice) Free([]float32)             {}
func (f *fakeDevice) FreeBF16([]uint16)          {}
func (f *fakeDevice) Upload(dst, src []float32)  {}
func (f *fakeDevice) ToBF16([]uint16, []float32) {}
func (f *fakeDevice) Sync()                      {}
func (f *fakeDevice) Threads() int               { return f.threads }
func (f *fakeDevice) ISA() string                { return "fake" }
func (f *fakeDevice) now() time.Time             { return f.clock }
func (f *fakeDevice) product() {
	f.clock = f.clock.Add(f.durs[min(f.products, len(f.durs)-1)])
	f.products++
}
func (f *fakeDevice) MatMul([]float32, []float32, []float32, int, int, int, engine.MatMulFlags) {
	f.product()
}
func (f *fakeDevice) MatMulBF16([]float32, []uint16, []uint16, int, int, int, engine.MatMulFlags) {
	f.product()
}

// The ceiling is the fastest timed product over at least MinTime (not a
// fixed count that one busy moment can spoil), the untimed first product
// (primitive creation) never counts, and the device's threads are
// reported.
func TestMeasureCeilingMinTime(t *testing.T) {
	const ms = time.Millisecond
	// The first is the untimed warm-up (made fastest so that counting it
	// shows); then slow products while the machine is busy, then faster.
	durs := []time.Duration{1 * ms, 400 * ms, 400 * ms, 400 * ms, 400 * ms, 400 * ms, 200 * ms, 100 * ms}
	f := &fakeDevice{durs: durs, threads: 3}
	n := 64
	c, err := MeasureCeiling(context.Background(), f, CeilingSpec{Size: n, MinTime: 2500 * ms, Precisions: []string{"bf16"}, now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	// 5×400 + 200 + 100 + 100 + 100 ms: the first time ≥ 2.5 s.
	if c.BF16Products != 9 {
		t.Errorf("timed %d products, want 9 (until 2.5 s had passed)", c.BF16Products)
	}
	want := 2 * float64(n*n*n) / 0.1 / 1e9
	if math.Abs(c.BF16-want) > 1e-9*want {
		t.Errorf("ceiling %g GFLOP/s, want the 100 ms product's %g", c.BF16, want)
	}
	if c.Threads != 3 || c.Size != n || c.MinSeconds != 2.5 || c.ISA != "fake" || c.FP32 != 0 {
		t.Errorf("ceiling %+v: want 3 threads, size %d, min 2.5 s, ISA fake, no fp32", c, n)
	}

	// MinProducts holds when the products are slow.
	f = &fakeDevice{durs: []time.Duration{time.Second}, threads: 1}
	c, err = MeasureCeiling(context.Background(), f, CeilingSpec{Size: n, MinTime: ms, MinProducts: 4, Precisions: []string{"fp32"}, now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	if c.FP32Products != 4 || f.products != 5 {
		t.Errorf("timed %d of %d products, want 4 of 5", c.FP32Products, f.products)
	}
}

// With ranks, every rank's result counts all ranks' tokens (the global
// batch): each rank's MFU is its share over its own ceiling, and the
// merged MFU all ranks' FLOPs over the sum of their ceilings. (It was
// all ranks' FLOPs over rank 0's ceiling: 1.58 for two 1-thread ranks
// that each ran at 0.79.)
func TestMergeRanksMFU(t *testing.T) {
	const global = 300.0 // GFLOP/s of both ranks together
	ceilings := []struct{ before, after float64 }{{170, 190}, {200, 180}}
	var results []*TrainResult
	for _, c := range ceilings {
		r := &TrainResult{GFLOPs: global, Ranks: 2}
		r.setMFU(trainCeiling("bf16", Ceiling{BF16: c.before, BF16Products: 20, Threads: 1, Size: 2048, MinSeconds: 1},
			Ceiling{BF16: c.after, BF16Products: 21, Threads: 1, Size: 2048, MinSeconds: 1}), "isa", 2)
		results = append(results, r)
	}
	if r := results[0]; math.Abs(r.MFU-150.0/190) > 1e-12 || r.CeilingGFLOPs != 190 {
		t.Errorf("rank 0: MFU %g of %g, want 150/190 of the larger of its two ceilings", r.MFU, r.CeilingGFLOPs)
	}
	m := MergeRanks(results)
	if math.Abs(m.MFU-global/390) > 1e-12 || m.CeilingGFLOPs != 390 {
		t.Errorf("merged: MFU %g of %g, want 300/390 (the ranks' ceilings summed)", m.MFU, m.CeilingGFLOPs)
	}
	c := m.Ceiling
	if c == nil || c.BeforeGFLOPs != 370 || c.AfterGFLOPs != 370 || c.Products != 82 || len(c.RankGFLOPs) != 2 || c.RankGFLOPs[1] != 200 || c.Threads != 1 {
		t.Errorf("merged ceiling %+v", c)
	}
	// One process: its FLOPs over its ceiling.
	r := &TrainResult{GFLOPs: 300}
	r.setMFU(trainCeiling("fp32", Ceiling{FP32: 150, BF16: 1000}, Ceiling{FP32: 140}), "isa", 1)
	if r.MFU != 2 || r.Ceiling.GFLOPs != 150 {
		t.Errorf("one process: MFU %g of %g, want 2 of the fp32 ceiling 150", r.MFU, r.Ceiling.GFLOPs)
	}
}

// bench train's MFU compares the step with products timed on the step's
// own threads, before and after the steps, the larger counting.
func TestTrainMFU(t *testing.T) {
	c := smallConfig(t)
	res, err := Train(context.Background(), TrainSpec{Config: c, Seq: 16, Batch: 1, Steps: 1, Precision: "bf16", Threads: 1,
		MFU: true, CeilingTime: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cl := res.Ceiling
	if cl == nil || cl.Threads != 1 || res.Threads != 1 || cl.Precision != "bf16" || cl.Size != CeilingSize || cl.Products < 6 {
		t.Fatalf("ceiling %+v with %d threads: want bf16 products on the step's 1 thread, at least 3 before and 3 after", cl, res.Threads)
	}
	if !(cl.BeforeGFLOPs > 0) || !(cl.AfterGFLOPs > 0) || cl.GFLOPs != max(cl.BeforeGFLOPs, cl.AfterGFLOPs) || res.CeilingGFLOPs != cl.GFLOPs {
		t.Errorf("ceiling %+v, reported %g: want the larger of two positive measurements", cl, res.CeilingGFLOPs)
	}
	if math.Abs(res.MFU-res.GFLOPs/cl.GFLOPs) > 1e-12*res.MFU || res.ISA == "" {
		t.Errorf("MFU %g, want %g / %g; ISA %q", res.MFU, res.GFLOPs, cl.GFLOPs, res.ISA)
	}
}
