package train_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hone/collective"
	"hone/collective/gloo"
	"hone/optim"
	"hone/safetensors"
	"hone/train"
)

// The data-parallel tests run each rank as a separate process over
// loopback: the test binary re-runs itself with the rank environment of
// collective.Launch, and TestMain plays the rank.

const (
	envSpec    = "HONE_TRAIN_TEST_SPEC"
	envWorkDir = "HONE_TRAIN_TEST_WORKDIR"
	envKillAt  = "HONE_TRAIN_TEST_KILL_AT"   // "rank:step": that rank SIGKILLs itself after that step
	envStopAt  = "HONE_TRAIN_TEST_CANCEL_AT" // "rank:step": that rank's context is cancelled after that step
	envShard   = "HONE_TRAIN_TEST_SHARD"     // "1": DistOptions.ShardOptimizer; "3": ShardParameters
)

func TestMain(m *testing.M) {
	if os.Getenv(envSpec) != "" {
		if err := playRank(); err != nil {
			fmt.Fprintln(os.Stderr, "rank error:", err)
			os.Exit(3)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type stepLine struct {
	Step int     `json:"step"`
	Loss float64 `json:"loss"`
}

// lineObserver prints each step's loss as a JSON line on stdout, and
// kills its process after step killAt (0: never), as a crash would.
type lineObserver struct {
	train.NopObserver
	killAt, stopAt int
	cancel         context.CancelFunc
}

func (o lineObserver) OnStep(s train.StepMetrics) {
	b, _ := json.Marshal(stepLine{s.Step, s.Loss})
	fmt.Println(string(b))
	if s.Step == o.killAt {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	if s.Step == o.stopAt {
		o.cancel()
	}
}

func playRank() error {
	var s train.Spec
	if err := json.Unmarshal([]byte(os.Getenv(envSpec)), &s); err != nil {
		return err
	}
	cfg, ok, err := collective.ConfigFromEnv()
	if !ok || err != nil {
		return fmt.Errorf("rank environment: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, err := gloo.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer g.Close()
	dir := filepath.Join(os.Getenv(envWorkDir), "rank-"+strconv.Itoa(cfg.Rank))
	obs := lineObserver{cancel: cancel}
	for env, at := range map[string]*int{envKillAt: &obs.killAt, envStopAt: &obs.stopAt} {
		if r, step, ok := strings.Cut(os.Getenv(env), ":"); ok && r == strconv.Itoa(cfg.Rank) {
			*at, _ = strconv.Atoi(step)
		}
	}
	_, err = train.RunDistributed(ctx, s, dir, obs, g, train.DistOptions{ShardOptimizer: os.Getenv(envShard) == "1", ShardParameters: os.Getenv(envShard) == "3"})
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "stopped:", err)
		return nil
	}
	return err
}

// launchRun runs s on `ranks` local ranks with work dirs base/rank-R and
// returns rank 0's step losses.
func launchRun(t *testing.T, s train.Spec, ranks int, base string) []float64 {
	t.Helper()
	outs, log, err := launch(t, s, ranks, base)
	if err != nil {
		t.Fatalf("%d ranks: %v\n%s", ranks, err, log)
	}
	return stepLosses(outs[0])
}

func launch(t *testing.T, s train.Spec, ranks int, base string, env ...string) ([]collective.RankOutput, string, error) {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	outs, err := collective.Launch(context.Background(), os.Args[0], []string{"-test.run=^$"},
		append([]string{envSpec + "=" + string(b), envWorkDir + "=" + base}, env...), ranks, 5*time.Second, &log)
	return outs, log.String(), err
}

func stepLosses(out collective.RankOutput) []float64 {
	var losses []float64
	sc := bufio.NewScanner(strings.NewReader(out.Stdout))
	for sc.Scan() {
		var l stepLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Step > 0 {
			losses = append(losses, l.Loss)
		}
	}
	return losses
}

// N ranks × k micro-batches take the steps of one process with N·k
// micro-batches: the same losses and, after 10 steps, the same fp32
// weights up to summation order.
func TestDataParallelMatchesOneProcess(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	s := spec(model, data)
	s.Duration = train.Duration{Batches: 10}
	s.BatchRows, s.GradAccum = 1, 4 // 2 ranks × 2 micro-batches
	s.ContextLength = 128           // keeps the six runs below quick
	s.Precision, s.Threads, s.CheckpointEvery = "fp32", 1, 5
	rec := &recorder{}
	one := t.TempDir()
	if _, err := train.Run(context.Background(), s, one, rec); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	losses := launchRun(t, s, 2, base)
	if len(losses) != len(rec.steps) || len(losses) != 10 {
		t.Fatalf("2 ranks took %d steps, one process %d; want 10", len(losses), len(rec.steps))
	}
	for i, l := range losses {
		want := rec.steps[i].Loss
		if math.Abs(l-want) > 1e-6*math.Abs(want) {
			t.Errorf("step %d: loss %.9g on 2 ranks, %.9g in one process", i+1, l, want)
		}
	}
	// Checkpoints, eval and the final model on rank 0 only.
	if _, err := os.Stat(filepath.Join(base, "rank-1", "checkpoints")); !os.IsNotExist(err) {
		t.Errorf("rank 1 wrote checkpoints (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(base, "rank-0", "final")); err != nil {
		t.Errorf("rank 0 wrote no final model: %v", err)
	}
	ckpt := filepath.Join("checkpoints", "step-00000010", "model")
	if d := maxWeightDiff(t, filepath.Join(one, ckpt), filepath.Join(base, "rank-0", ckpt)); d > 1e-5 {
		t.Errorf("final fp32 weights differ by up to %g, want ≤ 1e-5", d)
	} else {
		t.Logf("final fp32 weights: max abs difference %g", d)
	}

	// A rank killed after step 7: the other leaves (its collective fails
	// or times out) instead of hanging, rank 0 saving the state of step 7
	// (consistent: no step was under way), and the run resumes from it on
	// another number of ranks (3), ending where the one-process run ended.
	base = t.TempDir()
	outs, log, err := launch(t, s, 2, base, envKillAt+"=1:7")
	if err == nil || outs[0].Err == nil || !strings.Contains(log, "rank error:") {
		t.Fatalf("with rank 1 killed, rank 0 ended with %v (launch: %v); want an error\n%s", outs[0].Err, err, log)
	}
	t.Logf("rank 0 after rank 1's death: %s", lastLogLine(log, "rank error:"))
	if _, err := os.Stat(filepath.Join(base, "rank-0", "checkpoints", "step-00000007")); err != nil {
		t.Errorf("rank 0 did not save step 7 after losing rank 1: %v", err)
	}
	losses = launchRun(t, s, 3, base)
	if len(losses) != 3 {
		t.Fatalf("the resumed run took %d steps, want 3 (from step 7's checkpoint)", len(losses))
	}
	for i, l := range losses {
		want := rec.steps[7+i].Loss
		if math.Abs(l-want) > 1e-6*math.Abs(want) {
			t.Errorf("resumed on 3 ranks, step %d: loss %.9g, one process %.9g", 8+i, l, want)
		}
	}
	if d := maxWeightDiff(t, filepath.Join(one, ckpt), filepath.Join(base, "rank-0", ckpt)); d > 1e-5 {
		t.Errorf("resumed on 3 ranks: final fp32 weights differ by up to %g, want ≤ 1e-5", d)
	}

	// With the optimizer state sharded (ZeRO-1): 2 ranks stopped after
	// step 3 (the stop checkpoint gathers the moments), resumed on 3 ranks
	// (the moments dealt out again), end at the one-process weights and
	// moments.
	base = t.TempDir()
	outs, log, err = launch(t, s, 2, base, envStopAt+"=1:3", envShard+"=1")
	if err != nil {
		t.Fatalf("sharded, stopped: %v\n%s", err, log)
	}
	losses = stepLosses(outs[0])
	outs, log, err = launch(t, s, 3, base, envShard+"=1")
	if err != nil {
		t.Fatalf("sharded, resumed: %v\n%s", err, log)
	}
	losses = append(losses, stepLosses(outs[0])...)
	if len(losses) != 10 {
		t.Fatalf("sharded: %d steps, want 10", len(losses))
	}
	for i, l := range losses {
		if want := rec.steps[i].Loss; math.Abs(l-want) > 1e-6*math.Abs(want) {
			t.Errorf("sharded, step %d: loss %.9g, one process %.9g", i+1, l, want)
		}
	}
	if d := maxWeightDiff(t, filepath.Join(one, ckpt), filepath.Join(base, "rank-0", ckpt)); d > 1e-5 {
		t.Errorf("sharded: final fp32 weights differ by up to %g, want ≤ 1e-5", d)
	}
	opt := filepath.Join("checkpoints", "step-00000010", "optimizer.safetensors")
	for _, name := range []string{"exp_avg", "exp_avg_sq"} {
		a, b := readTensor(t, filepath.Join(one, opt), name), readTensor(t, filepath.Join(base, "rank-0", opt), name)
		var worst, scale float64
		for i := range a {
			worst, scale = max(worst, math.Abs(float64(a[i])-float64(b[i]))), max(scale, math.Abs(float64(a[i])))
		}
		if len(a) != len(b) || worst > 1e-5*scale {
			t.Errorf("sharded: %s differs by up to %g (largest %g, lengths %d, %d)", name, worst, scale, len(a), len(b))
		}
	}
}

func readTensor(t *testing.T, path, name string) []float32 {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ti, ok := f.Info(name)
	if !ok {
		t.Fatalf("%s: no tensor %s", path, name)
	}
	x := make([]float32, ti.Shape[0])
	if err := f.Float32(name, x); err != nil {
		t.Fatal(err)
	}
	return x
}

// Cancelling one rank's run stops every rank before the same step, the
// leader saving a stop checkpoint there.
func TestDataParallelStopsTogether(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	s := spec(model, data)
	s.Duration = train.Duration{Batches: 10}
	s.BatchRows, s.GradAccum = 1, 4
	s.ContextLength = 128
	s.Precision, s.Threads, s.CheckpointEvery = "fp32", 1, 0
	s.EvalData = ""
	base := t.TempDir()
	outs, log, err := launch(t, s, 2, base, envStopAt+"=1:3")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	for r, o := range outs {
		if n := len(stepLosses(o)); n != 3 {
			t.Errorf("rank %d took %d steps, want 3", r, n)
		}
	}
	stops := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "stopped:") {
			stops++
		}
	}
	if stops != 2 {
		t.Errorf("want both ranks to report the stop:\n%s", log)
	}
	if _, err := os.Stat(filepath.Join(base, "rank-0", "checkpoints", "step-00000003")); err != nil {
		t.Errorf("no stop checkpoint at step 3: %v", err)
	}
}

func lastLogLine(log, prefix string) string {
	var last string
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, prefix) {
			last = l
		}
	}
	return last
}

func maxWeightDiff(t *testing.T, a, b string) float64 {
	t.Helper()
	ma, err := safetensors.OpenModel(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Close()
	mb, err := safetensors.OpenModel(b)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	var worst float64
	for _, ti := range ma.Tensors() {
		n := 1
		for _, d := range ti.Shape {
			n *= d
		}
		x, y := make([]float32, n), make([]float32, n)
		if err := ma.Float32(ti.Name, x); err != nil {
			t.Fatal(err)
		}
		if err := mb.Float32(ti.Name, y); err != nil {
			t.Fatalf("%s: %v", ti.Name, err)
		}
		for i := range x {
			worst = max(worst, math.Abs(float64(x[i])-float64(y[i])))
		}
	}
	return worst
}

// In bf16 the sharded optimizer (ZeRO-1) sends the other ranks only the
// bf16 copy of most of its shard, so their fp32 weights lag until a
// checkpoint or the final model gathers them: 2 sharded ranks take the
// steps of 2 unsharded ones, and the checkpoints' fp32 weights (written
// mid-run, at step 3, and at the end) agree; a lagging shard would differ
// by about the learning rate. No clipping, whose norm the shards sum in
// another order. (Two runs of one layout are bit-identical, see
// TestRepeatedRunsAreBitwiseIdentical; a one-process bf16 run and an
// unsharded 2-rank one add the micro-batches' gradients in another order
// and their losses differ by up to 5e-7.)
func TestShardedOptimizerBF16MatchesUnsharded(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	s := spec(model, data)
	s.Duration = train.Duration{Batches: 6}
	s.BatchRows, s.GradAccum = 1, 2
	s.ContextLength = 128
	s.Precision, s.Threads, s.CheckpointEvery = "bf16", 1, 3
	s.EvalData = ""
	s.AdamW = optim.DefaultAdamW
	s.AdamW.MaxGradNorm = 0
	var losses [2][]float64
	var dirs [2]string
	for i, env := range []string{envShard + "=0", envShard + "=1"} {
		dirs[i] = t.TempDir()
		outs, log, err := launch(t, s, 2, dirs[i], env)
		if err != nil {
			t.Fatalf("%s: %v\n%s", env, err, log)
		}
		losses[i] = stepLosses(outs[0])
	}
	if len(losses[1]) != 6 || len(losses[0]) != 6 {
		t.Fatalf("took %d steps sharded, %d unsharded; want 6", len(losses[1]), len(losses[0]))
	}
	for i, l := range losses[1] {
		if want := losses[0][i]; math.Abs(l-want) > 1e-5*math.Abs(want) {
			t.Errorf("step %d: loss %.9g sharded, %.9g unsharded", i+1, l, want)
		}
	}
	for _, step := range []string{"step-00000003", "step-00000006"} {
		ckpt := filepath.Join("rank-0", "checkpoints", step, "model")
		if d := maxWeightDiff(t, filepath.Join(dirs[0], ckpt), filepath.Join(dirs[1], ckpt)); d > 1e-4 {
			t.Errorf("%s: fp32 weights differ by up to %g sharded, want ≤ 1e-4", step, d)
		}
	}
	if _, err := os.Stat(filepath.Join(dirs[1], "rank-0", "final")); err != nil {
		t.Errorf("no final model: %v", err)
	}
}
