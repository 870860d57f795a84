package bench

import (
	"bytes"
	"context"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"hone/engine"
	_ "hone/engine/cpu"
)

// A LoRA benchmark trains only the adapter on a frozen base (bf16-only in
// bf16 precision), reports the adapter's size and learns on its batch.
func TestTrainLoRA(t *testing.T) {
	c := smallConfig(t)
	dev, err := engine.OpenDevice("cpu", engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := engine.NewAdapter(c, dev, engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, prec := range []string{"bf16", "fp32"} {
		res, err := Train(context.Background(), TrainSpec{Config: c, Seq: 32, Batch: 2, Steps: 3, Precision: prec, Threads: 1,
			LoRARank: 4, LoRATargets: []string{"q_proj", "v_proj"}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Method != "lora" || res.Trainable != int64(len(a.Params)) || res.LoRARank != 4 || res.FrozenBF16 != (prec == "bf16") {
			t.Errorf("%s: method %q, trainable %d (adapter %d), rank %d, frozen_bf16 %v", prec, res.Method, res.Trainable, len(a.Params), res.LoRARank, res.FrozenBF16)
		}
		first, last := res.Losses[0], res.Losses[len(res.Losses)-1]
		if math.IsNaN(last) || !(last < first) {
			t.Errorf("%s: loss %v → %v, want it to fall on a repeated batch", prec, first, last)
		}
	}
}

// --lora-dropout trains as hone create's runs do: the adapter drops out
// (the first step's loss differs from the exact one's, as the masks change
// the forward pass) and the plan counts its buffers.
func TestTrainLoRADropout(t *testing.T) {
	c := smallConfig(t)
	spec := TrainSpec{Config: c, Seq: 32, Batch: 2, Steps: 1, Precision: "fp32", Threads: 1, LoRARank: 4}
	exact, err := Train(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.LoRADropout = 0.3
	dropped, err := Train(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if exact.Losses[0] == dropped.Losses[0] {
		t.Errorf("dropout 0.3: loss %v, the same as without dropout", dropped.Losses[0])
	}
	withPlan, err := Plan(spec, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	spec.LoRADropout = 0
	withoutPlan, err := Plan(spec, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	if withPlan.PeakBytes <= withoutPlan.PeakBytes {
		t.Errorf("plan with dropout %d bytes, without %d: want the dropout buffers counted", withPlan.PeakBytes, withoutPlan.PeakBytes)
	}
}

// Below the table, each LoRA row is divided by the full row of its shape.
func TestWriteLoRASpeedups(t *testing.T) {
	full := Case{ConfigPath: "configs/llama-125m.json", Seq: 256, Batch: 4, Precision: "bf16", Threads: 2}
	lora := full
	lora.LoRARank = 16
	fp32 := full
	fp32.Precision = "fp32"
	rows := []Row{
		{Case: fp32, Hone: &TrainResult{TokensPerS: 1}, Torch: &TrainResult{TokensPerS: 1}},
		{Case: full, Hone: &TrainResult{TokensPerS: 100}, Torch: &TrainResult{TokensPerS: 20}},
		{Case: lora, Hone: &TrainResult{TokensPerS: 150}, Torch: &TrainResult{TokensPerS: 30}},
	}
	var b bytes.Buffer
	WriteTable(&b, rows)
	want := "lora rank 16 / full tokens/s, llama-125m.json bf16 2 threads: hone 1.50x, pytorch 1.50x\n"
	if !strings.Contains(b.String(), want) || strings.Count(b.String(), "lora rank") != 1 {
		t.Errorf("table:\n%s\nwant one line %q", b.String(), want)
	}
	if got := strings.Join(lora.loraArgs(), " "); got != "--lora-rank 16" {
		t.Errorf("lora args %q", got)
	}
}

// The table says which BLAS PyTorch's fp32 products ran on, loudly when it
// is the reference one (Debian's default: its fp32 figures then measure
// that library).
func TestWriteTableBLAS(t *testing.T) {
	c := Case{ConfigPath: "configs/llama-125m.json", Seq: 256, Batch: 4, Precision: "fp32", Threads: 2}
	for _, ref := range []bool{false, true} {
		lib := map[bool]string{false: "openblas-pthread", true: "reference"}[ref]
		blas := &PeerBLAS{Library: lib, Path: "/usr/lib/x86_64-linux-gnu/" + lib + "/libblas.so.3", GFLOPs512: 5, Reference: ref}
		var b bytes.Buffer
		WriteTable(&b, []Row{{Case: c, Hone: &TrainResult{TokensPerS: 2}, Torch: &TrainResult{TokensPerS: 1, BLAS: blas}}})
		line := "pytorch's fp32 products run on " + lib + " BLAS (" + blas.Path + "): 5.0 GFLOP/s on a 512² product"
		if !strings.Contains(b.String(), line) || strings.Contains(b.String(), "WARNING") != ref {
			t.Errorf("reference %v: table\n%s\nwant %q, a warning only for the reference BLAS", ref, b.String(), line)
		}
	}
}

// --loss-chunk runs the loss in chunks of that many rows (0: the engine's
// default), which the result reports and the plan counts. The timed
// step's loss is the same up to the regrouping of sums across chunks (the
// warm-up step's head gradient, the loss): 1e-8 relative, measured 1.5e-10.
func TestTrainLossChunk(t *testing.T) {
	c := smallConfig(t)
	spec := TrainSpec{Config: c, Seq: 32, Batch: 2, Steps: 1, Precision: "fp32", Threads: 1}
	def, err := Train(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.LossChunk = 16
	chunked, err := Train(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if def.LossChunk <= 64 || chunked.LossChunk != 16 {
		t.Errorf("loss chunks of %d rows by default, %d with LossChunk 16; want the default to cover the 64 rows", def.LossChunk, chunked.LossChunk)
	}
	if d := math.Abs(chunked.Losses[0] - def.Losses[0]); d > 1e-8*def.Losses[0] {
		t.Errorf("loss %v in chunks of 16 rows, %v in one", chunked.Losses[0], def.Losses[0])
	}
	plan, err := Plan(spec, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := plan.Parts[engine.PartLogitsChunk], int64(4*16*c.VocabSize); got != want {
		t.Errorf("plan's logits chunk %d bytes, want 16 rows' %d", got, want)
	}
}

// smallConfig is configs/llama-small.json.
func smallConfig(t *testing.T) *engine.Config {
	t.Helper()
	raw, err := os.ReadFile("configs/llama-small.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := engine.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// peak_rss_bytes is the steps' peak: the ceiling's products timed after
// the steps (three CeilingSize² matrices beside the model, 50 MB and
// more) do not count.
func TestTrainPeakRSSLeavesOutTheCeiling(t *testing.T) {
	var steps int64
	res, err := Train(context.Background(), TrainSpec{Config: smallConfig(t), Seq: 16, Batch: 1, Steps: 1, Precision: "fp32",
		Threads: 1, MFU: true, CeilingTime: time.Millisecond, Progress: func(step int, _ float64, _ int64) {
			if step == 0 { // the peak so far is the ceiling's before the steps, or an earlier test's
				debug.FreeOSMemory() // and its matrices would be reused after the steps
				if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
					t.Skipf("cannot reset the peak RSS: %v", err)
				}
			}
			steps = PeakRSS()
		}})
	if err != nil {
		t.Fatal(err)
	}
	if slack := int64(8 << 20); res.PeakRSSBytes > steps+slack {
		t.Errorf("peak RSS %d, the steps' %d: the ceiling after them counted", res.PeakRSSBytes, steps)
	}
}
