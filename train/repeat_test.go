package train_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"hone/train"
)

// Two runs of the same spec, at the same thread count, are bit for bit the
// same: every step's loss, and the fp32 weights and optimizer state of the
// last checkpoint (the final model is bf16 and could hide a difference).
// Exact resume and the bitwise multi-rank comparisons rest on this: a
// reduction that adds its partial sums in completion order (threads,
// goroutines, collective arrivals) would break it. Both precisions on 2
// device threads, gradient clipping on (the norm is such a reduction), and
// bf16 on 2 ranks of 1 thread, the unsharded data parallelism whose
// allreduce overlaps the backward pass.
func TestRepeatedRunsAreBitwiseIdentical(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	for _, c := range []struct {
		precision string
		ranks     int
	}{{"bf16", 1}, {"fp32", 1}, {"bf16", 2}} {
		s := spec(model, data)
		s.Duration = train.Duration{Batches: 6}
		s.BatchRows, s.GradAccum = 2, 2
		s.ContextLength = 128
		s.Precision, s.Threads, s.CheckpointEvery = c.precision, 2, 6
		s.EvalData = ""
		if c.ranks > 1 {
			s.BatchRows, s.Threads = 1, 1
		}
		var losses [2][]float64
		var ckpts [2]string
		for i := range 2 {
			work := t.TempDir()
			ckpts[i] = filepath.Join(work, "checkpoints", "step-00000006")
			if c.ranks == 1 {
				rec := &recorder{}
				if _, err := train.Run(context.Background(), s, work, rec); err != nil {
					t.Fatalf("%s: %v", c.precision, err)
				}
				for _, m := range rec.steps {
					losses[i] = append(losses[i], m.Loss)
				}
				continue
			}
			outs, log, err := launch(t, s, c.ranks, work, envShard+"=0")
			if err != nil {
				t.Fatalf("%s on %d ranks: %v\n%s", c.precision, c.ranks, err, log)
			}
			losses[i] = stepLosses(outs[0])
			ckpts[i] = filepath.Join(work, "rank-0", "checkpoints", "step-00000006")
		}
		name := c.precision
		if c.ranks > 1 {
			name += " on 2 ranks"
		}
		if len(losses[0]) != 6 || len(losses[1]) != 6 {
			t.Fatalf("%s: %d and %d steps, want 6", name, len(losses[0]), len(losses[1]))
		}
		for i := range losses[0] {
			if losses[0][i] != losses[1][i] {
				t.Errorf("%s, step %d: loss %.17g, then %.17g", name, i+1, losses[0][i], losses[1][i])
			}
		}
		for _, f := range []string{"optimizer.safetensors", filepath.Join("model", "model.safetensors")} {
			a, err := os.ReadFile(filepath.Join(ckpts[0], f))
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(ckpts[1], f))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("%s: the last checkpoint's %s differs between the runs", name, f)
			}
		}
	}
}
