package bench

import (
	"context"
	"math"
	"testing"
	"time"

	"hone/engine"
)

// bf16 training (bf16 matrix products, fp32 master weights, moments and
// reductions) must follow fp32 training: over 50 steps of the bench's
// run, the loss stays within 1% of fp32's at every step. The 125M bench
// takes many minutes per 50 steps on a CI machine, so this runs
// llama-small (4 layers, vocab 8000) at the bench's seq 256 × batch 4:
// the same code paths and shape. (Much smaller batches learn their one
// batch so fast that bf16's rounding noise moves the loss by over 1%.)
func TestBF16LossFollowsFP32(t *testing.T) {
	c := smallConfig(t)
	var losses [2][]float64
	for i, prec := range []string{"fp32", "bf16"} {
		res, err := Train(context.Background(), TrainSpec{Config: c, Seq: 256, Batch: 4, Steps: 50, Precision: prec, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		losses[i] = res.Losses
	}
	if len(losses[0]) != 50 || len(losses[1]) != 50 {
		t.Fatalf("steps: %d and %d losses, want 50", len(losses[0]), len(losses[1]))
	}
	for s := range losses[0] {
		f, b := losses[0][s], losses[1][s]
		if rel := math.Abs(b-f) / f; !(rel <= 0.01) {
			t.Errorf("step %d: bf16 loss %.5f, fp32 %.5f (%.2f%% apart)", s+1, b, f, 100*rel)
		}
	}
	if !(losses[0][49] < losses[0][0]-0.5) {
		t.Errorf("fp32 loss %v → %v: the run should learn its repeated batch", losses[0][0], losses[0][49])
	}
	t.Logf("loss %.4f → %.4f (fp32), %.4f → %.4f (bf16)", losses[0][0], losses[0][49], losses[1][0], losses[1][49])
}

// The ceiling times both precisions through the device, on its threads,
// and names its ISA.
func TestMeasureCeiling(t *testing.T) {
	dev, err := engine.OpenDevice("cpu", engine.DeviceOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := MeasureCeiling(context.Background(), dev, CeilingSpec{Size: 128, MinTime: time.Millisecond, MinProducts: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !(c.BF16 > 0) || !(c.FP32 > 0) || c.ISA == "" || c.Threads != 1 || c.BF16Products < 2 || c.FP32Products < 2 {
		t.Fatalf("ceiling %+v: want positive throughputs, an ISA, 1 thread, at least 2 products each", c)
	}
}
