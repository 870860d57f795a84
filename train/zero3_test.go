package train_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/collective"
	"hone/engine"
	"hone/internal/testmodel"
	"hone/safetensors"
	"hone/train"
)

// Sharded parameters (ZeRO stage 3) take the steps of one process with
// the same global batch: 2 ranks stopped after step 3, resumed on 2 ranks
// (the same N) and stopped after step 6, resumed on 3 ranks (another N,
// with ranks that run passes scoring nothing: 4 micro-batches over 3
// ranks). Every step's loss and the fp32 weights and moments of the last
// checkpoint match the one-process run; one process also resumes from a
// sharded checkpoint, and the final model is a normal HF directory.
func TestShardedParametersMatchOneProcess(t *testing.T) {
	model := t.TempDir()
	testmodel.Write(t, model, strings.Replace(testmodel.Llama3Tiny, `"tie_word_embeddings": true`, `"tie_word_embeddings": false`, 1), 1)
	s := spec(model, chatData(t))
	s.Duration = train.Duration{Batches: 10}
	s.BatchRows, s.GradAccum = 1, 4
	s.ContextLength = 128
	s.Precision, s.Threads, s.CheckpointEvery = "fp32", 1, 5
	rec := &recorder{}
	one := t.TempDir()
	if _, err := train.Run(context.Background(), s, one, rec); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	var losses []float64
	for _, run := range []struct {
		ranks int
		env   []string
	}{{2, []string{envStopAt + "=1:3"}}, {2, []string{envStopAt + "=0:6"}}, {3, nil}} {
		outs, log, err := launch(t, s, run.ranks, base, append(run.env, envShard+"=3")...)
		if err != nil {
			t.Fatalf("%d ranks %v: %v\n%s", run.ranks, run.env, err, log)
		}
		losses = append(losses, stepLosses(outs[0])...)
	}
	if len(losses) != 10 {
		t.Fatalf("sharded: %d steps, want 10", len(losses))
	}
	for i, l := range losses {
		if want := rec.steps[i].Loss; math.Abs(l-want) > 1e-6*math.Abs(want) {
			t.Errorf("sharded, step %d: loss %.9g, one process %.9g", i+1, l, want)
		}
	}
	cfg, err := engine.LoadConfig(model)
	if err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(base, "rank-0", "checkpoints", "step-00000010")
	oneCkpt := filepath.Join(one, "checkpoints", "step-00000010")
	man := readManifest(t, ckpt)
	if man.Ranks != 3 {
		t.Errorf("the last checkpoint's manifest says %d ranks, want 3", man.Ranks)
	}
	got := shardedState(t, ckpt, "params", int(cfg.NumParams()))
	for _, sp := range cfg.ParamSpecs() {
		want := readModelTensor(t, filepath.Join(oneCkpt, "model"), sp.Name, sp.Size())
		if d := maxDiff(want, got[sp.Offset:sp.Offset+sp.Size()]); d > 1e-5 {
			t.Errorf("sharded: %s differs from one process's by up to %g, want ≤ 1e-5", sp.Name, d)
		}
	}
	for _, name := range []string{"exp_avg", "exp_avg_sq"} {
		a, b := readTensor(t, filepath.Join(oneCkpt, "optimizer.safetensors"), name), shardedState(t, ckpt, name, int(cfg.NumParams()))
		var scale float64
		for _, x := range a {
			scale = max(scale, math.Abs(float64(x)))
		}
		if d := maxDiff(a, b); d > 1e-5*scale {
			t.Errorf("sharded: %s differs by up to %g (largest %g)", name, d, scale)
		}
	}
	for _, r := range []string{"rank-1", "rank-2"} {
		if _, err := os.Stat(filepath.Join(base, r, "checkpoints")); !os.IsNotExist(err) {
			t.Errorf("%s wrote checkpoints (%v)", r, err)
		}
	}
	if _, err := engine.LoadConfig(filepath.Join(base, "rank-0", "final")); err != nil {
		t.Errorf("rank 0's final model: %v", err)
	}
	if d := maxWeightDiff(t, filepath.Join(one, "final"), filepath.Join(base, "rank-0", "final")); d > 1e-2 {
		t.Errorf("final bf16 models differ by up to %g", d)
	}

	// One process resumes from the sharded checkpoint of step 5 (2 ranks)
	// and ends at the same weights.
	alone := t.TempDir()
	from := filepath.Join(base, "rank-0", "checkpoints", "step-00000005")
	if err := os.CopyFS(filepath.Join(alone, "checkpoints", "step-00000005"), os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
	rec2 := &recorder{}
	if _, err := train.Run(context.Background(), s, alone, rec2); err != nil {
		t.Fatal(err)
	}
	if len(rec2.steps) != 5 {
		t.Fatalf("resumed from a sharded checkpoint: %d steps, want 5", len(rec2.steps))
	}
	ck := filepath.Join("checkpoints", "step-00000010", "model")
	if d := maxWeightDiff(t, filepath.Join(one, ck), filepath.Join(alone, ck)); d > 1e-5 {
		t.Errorf("one process resumed from shards: weights differ by up to %g, want ≤ 1e-5", d)
	}

	// And 2 sharded ranks resume from the one-process checkpoint of step 5
	// (model/ and optimizer.safetensors), each reading its ranges.
	base2 := t.TempDir()
	if err := os.CopyFS(filepath.Join(base2, "rank-0", "checkpoints", "step-00000005"), os.DirFS(filepath.Join(one, "checkpoints", "step-00000005"))); err != nil {
		t.Fatal(err)
	}
	outs, log, err := launch(t, s, 2, base2, envShard+"=3")
	if err != nil {
		t.Fatalf("sharded, resumed from an unsharded checkpoint: %v\n%s", err, log)
	}
	if got := stepLosses(outs[0]); len(got) != 5 || math.Abs(got[4]-rec.steps[9].Loss) > 1e-6*rec.steps[9].Loss {
		t.Errorf("sharded, resumed from an unsharded checkpoint: losses %v, want 5 ending at %.9g", got, rec.steps[9].Loss)
	}
	got = shardedState(t, filepath.Join(base2, "rank-0", "checkpoints", "step-00000010"), "params", int(cfg.NumParams()))
	for _, sp := range cfg.ParamSpecs() {
		want := readModelTensor(t, filepath.Join(oneCkpt, "model"), sp.Name, sp.Size())
		if d := maxDiff(want, got[sp.Offset:sp.Offset+sp.Size()]); d > 1e-5 {
			t.Errorf("sharded, resumed from an unsharded checkpoint: %s differs by up to %g", sp.Name, d)
		}
	}
}

type manifest struct {
	Ranks  int        `json:"ranks"`
	Params int        `json:"params"`
	Shards [][][2]int `json:"shards"`
}

func readManifest(t *testing.T, ckpt string) manifest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ckpt, "shards", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// shardedState assembles the whole of one state tensor from a sharded
// checkpoint's files, by the manifest's ranges.
func shardedState(t *testing.T, ckpt, kind string, n int) []float32 {
	t.Helper()
	man := readManifest(t, ckpt)
	out := make([]float32, n)
	seen := 0
	for q, ranges := range man.Shards {
		x := readTensor(t, filepath.Join(ckpt, "shards", fmt.Sprintf("%s-%05d-of-%05d.safetensors", kind, q, man.Ranks)), kind)
		off := 0
		for _, rg := range ranges {
			copy(out[rg[0]:rg[1]], x[off:off+rg[1]-rg[0]])
			off += rg[1] - rg[0]
			seen += rg[1] - rg[0]
		}
		if off != len(x) {
			t.Fatalf("%s shard %d: ranges cover %d values, the file holds %d", kind, q, off, len(x))
		}
	}
	if seen != n {
		t.Fatalf("%s: the shards cover %d values, want %d", kind, seen, n)
	}
	return out
}

func readModelTensor(t *testing.T, dir, name string, n int) []float32 {
	t.Helper()
	m, err := safetensors.OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	x := make([]float32, n)
	if err := m.Float32(name, x); err != nil {
		t.Fatal(err)
	}
	return x
}

func maxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var worst float64
	for i := range a {
		worst = max(worst, math.Abs(float64(a[i])-float64(b[i])))
	}
	return worst
}

// A LoRA run with its fp32 base sharded over 3 ranks (4 micro-batches a
// step: one rank runs a pass scoring nothing; embeddings tied, so the head
// gathers them) takes the steps of one process, with dropout, and rank 0
// writes the adapter and merged model.
func TestShardedLoRABaseMatchesOneProcess(t *testing.T) {
	s := spec(tinyModel(t), chatData(t))
	s.Method = "lora"
	dropout := 0.1
	s.LoRA = &train.LoRASpec{Rank: 4, Targets: []string{"q_proj", "v_proj", "down_proj"}, Dropout: &dropout}
	s.Duration = train.Duration{Batches: 4}
	s.BatchRows, s.GradAccum = 1, 4
	s.ContextLength = 128
	s.Precision, s.Threads, s.CheckpointEvery = "fp32", 1, 2
	s.EvalPrompts = []string{"What is 12 + 30?"} // skipped while sharded
	rec := &recorder{}
	one := t.TempDir()
	res, err := train.Run(context.Background(), s, one, rec)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	outs, log, err := launch(t, s, 3, base, envShard+"=3")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	matchOneProcess(t, "sharded LoRA", rec, res.AdapterDir, outs[0], base)
	if _, err := engine.LoadConfig(filepath.Join(base, "rank-0", "final")); err != nil {
		t.Errorf("rank 0's merged model: %v", err)
	}
}

// matchOneProcess checks a sharded run's 4 step losses (rank 0's output)
// and rank 0's final adapter against one process's (rec, adapterDir).
func matchOneProcess(t *testing.T, what string, rec *recorder, adapterDir string, out0 collective.RankOutput, base string) {
	t.Helper()
	losses := stepLosses(out0)
	if len(losses) != 4 {
		t.Fatalf("%s: %d steps, want 4", what, len(losses))
	}
	for i, l := range losses {
		if want := rec.steps[i].Loss; math.Abs(l-want) > 1e-6*math.Abs(want) {
			t.Errorf("%s, step %d: loss %.9g, one process %.9g", what, i+1, l, want)
		}
	}
	a := readModelTensorAll(t, filepath.Join(adapterDir, engine.AdapterWeightsFile))
	b := readModelTensorAll(t, filepath.Join(base, "rank-0", "final-adapter", engine.AdapterWeightsFile))
	for name, x := range a {
		if d := maxDiff(x, b[name]); d > 1e-5 {
			t.Errorf("%s: adapter %s differs by up to %g, want ≤ 1e-5", what, name, d)
		}
	}
}

func readModelTensorAll(t *testing.T, path string) map[string][]float32 {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]float32{}
	for _, ti := range f.Tensors() {
		x := make([]float32, ti.NumElements())
		if err := f.Float32(ti.Name, x); err != nil {
			t.Fatal(err)
		}
		out[ti.Name] = x
	}
	return out
}

// A QLoRA run with its NF4 base sharded over 2 ranks (each holding half
// of every layer's NF4 data, gathered over Gloo) takes the steps of one
// process on the whole NF4 base, and rank 0 writes the adapter.
func TestShardedQLoRAMatchesOneProcess(t *testing.T) {
	s := spec(tinyModel(t), chatData(t))
	s.Method = "lora"
	s.LoRA = &train.LoRASpec{Rank: 4, QuantizeBase: "nf4"}
	s.Duration = train.Duration{Batches: 4}
	s.BatchRows, s.GradAccum = 1, 2
	s.ContextLength = 128
	s.Precision, s.Threads = "bf16", 1
	rec := &recorder{}
	res, err := train.Run(context.Background(), s, t.TempDir(), rec)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	outs, log, err := launch(t, s, 2, base, envShard+"=3")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	matchOneProcess(t, "sharded QLoRA", rec, res.AdapterDir, outs[0], base)
}
