package train_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
	"hone/internal/testassets"
	"hone/internal/testmodel"
	"hone/train"
)

// tinyModel writes a random Llama 3-shaped model into a temp dir.
func tinyModel(t *testing.T) string {
	dir := t.TempDir()
	testmodel.Write(t, dir, testmodel.Llama3Tiny, 1)
	return dir
}

func chatData(t *testing.T) string { return testassets.ChatData(t) }

type recorder struct {
	train.NopObserver
	steps   []train.StepMetrics
	evals   []train.EvalMetrics
	ckpts   []train.Checkpoint
	prompts map[int][]train.PromptOutput
	onStep  func(train.StepMetrics)
	onEval  func(train.EvalMetrics)
}

func (r *recorder) OnStep(s train.StepMetrics) {
	r.steps = append(r.steps, s)
	if r.onStep != nil {
		r.onStep(s)
	}
}
func (r *recorder) OnEval(e train.EvalMetrics) {
	r.evals = append(r.evals, e)
	if r.onEval != nil {
		r.onEval(e)
	}
}
func (r *recorder) OnCheckpoint(c train.Checkpoint) { r.ckpts = append(r.ckpts, c) }
func (r *recorder) OnPromptOutputs(step int, o []train.PromptOutput) {
	if r.prompts == nil {
		r.prompts = map[int][]train.PromptOutput{}
	}
	r.prompts[step] = o
}

func spec(model, data string) train.Spec {
	return train.Spec{ModelDir: model, Task: "chat", TrainData: filepath.Join(data, "train.jsonl"),
		EvalData: filepath.Join(data, "eval.jsonl"), Duration: train.Duration{Batches: 8}, LearningRate: 3e-3,
		ContextLength: 256, BatchRows: 2, GradAccum: 2, Seed: 5, CheckpointEvery: 3}
}

func TestRunEndToEnd(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	s := spec(model, data)
	s.EvalPrompts = []string{"What is 12 + 30?"}
	s.KeepCheckpoints = 2
	rec := &recorder{}
	res, err := train.Run(context.Background(), s, t.TempDir(), rec)
	if err != nil {
		t.Fatal(err)
	}
	if res.Steps != 8 || len(rec.steps) != 8 {
		t.Fatalf("steps: result %d, observed %d, want 8", res.Steps, len(rec.steps))
	}
	first, last := rec.steps[0].Loss, rec.steps[len(rec.steps)-1].Loss
	if !(last < first) {
		t.Errorf("loss did not fall: %.4f -> %.4f", first, last)
	}
	// Checkpoints at steps 3, 6 and the end (8).
	var got []int
	for _, c := range rec.ckpts {
		got = append(got, c.Step)
	}
	if len(got) != 3 || got[0] != 3 || got[1] != 6 || got[2] != 8 {
		t.Errorf("checkpoint steps %v, want [3 6 8]", got)
	}
	// Keeping 2, the save at step 8 pruned step 3's and said so.
	if p := rec.ckpts[len(rec.ckpts)-1].Pruned; len(p) != 1 || p[0] != 3 {
		t.Errorf("the last checkpoint pruned %v, want [3]", p)
	}
	if _, err := os.Stat(rec.ckpts[0].Dir); !os.IsNotExist(err) {
		t.Errorf("pruned checkpoint %s is still on disk (%v)", rec.ckpts[0].Dir, err)
	}
	if len(rec.evals) != 3 || !(rec.evals[0].Perplexity > 1) || rec.evals[2].TokenAccuracy < 0 {
		t.Errorf("eval metrics %+v", rec.evals)
	}
	if outs := rec.prompts[8]; len(outs) != 1 || outs[0].Prompt != "What is 12 + 30?" {
		t.Errorf("prompt outputs at step 8: %+v", rec.prompts)
	}
	if _, err := engine.Load(res.ModelDir, cpu.New(0), engine.Options{}); err != nil {
		t.Fatalf("final model does not load: %v", err)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "config.json"} {
		if _, err := os.Stat(filepath.Join(res.ModelDir, f)); err != nil {
			t.Errorf("final model dir lacks %s", f)
		}
	}
}

// Cancelled mid-run and resumed in the same work dir, a run ends with
// byte-identical weights to an uninterrupted one. The cancel saves a stop
// checkpoint at the cancel step even with eval prompts configured (which
// need a live context), and the resume continues from it.
func TestResumeIsExact(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	s := spec(model, data)
	s.EvalPrompts = []string{"What is 12 + 30?"}
	checkResumeIsExact(t, s)
}

// checkResumeIsExact runs s uninterrupted and cancelled twice then resumed
// (see TestResumeIsExact), checks the final weights are byte-equal and
// returns both results.
func checkResumeIsExact(t *testing.T, s train.Spec) (full, resumed *train.Result) {
	t.Helper()
	full, err := train.Run(context.Background(), s, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}

	work := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{onStep: func(m train.StepMetrics) {
		if m.Step == 4 {
			cancel()
		}
	}}
	if _, err := train.Run(ctx, s, work, rec); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run returned %v, want context.Canceled", err)
	}
	if n := len(rec.steps); n != 4 {
		t.Fatalf("cancelled run took %d steps after cancel at 4", n)
	}
	if n := len(rec.ckpts); n == 0 || rec.ckpts[n-1].Step != 4 {
		t.Fatalf("checkpoints of the cancelled run %+v, want the last at the cancel step 4", rec.ckpts)
	}
	if _, err := os.Stat(filepath.Join(rec.ckpts[len(rec.ckpts)-1].Dir, "state.json")); err != nil {
		t.Fatalf("stop checkpoint not on disk: %v", err)
	}
	// Resumed, and cancelled again while the step-6 checkpoint completes
	// its eval prompts: that checkpoint is still saved.
	ctx, cancel = context.WithCancel(context.Background())
	rec2 := &recorder{onEval: func(e train.EvalMetrics) {
		if e.Step == 6 {
			cancel()
		}
	}}
	if _, err := train.Run(ctx, s, work, rec2); !errors.Is(err, context.Canceled) {
		t.Fatalf("run cancelled during eval prompts returned %v, want context.Canceled", err)
	}
	if len(rec2.steps) != 2 || rec2.steps[0].Step != 5 || len(rec2.ckpts) != 1 || rec2.ckpts[0].Step != 6 {
		t.Fatalf("resumed run did steps %+v and checkpoints %+v, want steps 5, 6 and the checkpoint of 6", rec2.steps, rec2.ckpts)
	}
	rec3 := &recorder{}
	resumed, err = train.Run(context.Background(), s, work, rec3)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec3.steps) != 2 || rec3.steps[0].Step != 7 {
		t.Fatalf("second resume did steps %+v, want 7, 8", rec3.steps)
	}
	a, _ := os.ReadFile(filepath.Join(full.ModelDir, "model.safetensors"))
	b, _ := os.ReadFile(filepath.Join(resumed.ModelDir, "model.safetensors"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatal("resumed run's final weights differ from the uninterrupted run's")
	}
	return full, resumed
}

func TestBadDataRefused(t *testing.T) {
	model := tinyModel(t)
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte(`{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}
{"messages":[{"role":"assistant","content":"first"}]}
not json
`), 0o644)
	s := train.Spec{ModelDir: model, Task: "chat", TrainData: bad}
	_, err := train.Validate(context.Background(), s)
	if err == nil || !strings.Contains(err.Error(), "bad.jsonl:2") || !strings.Contains(err.Error(), "bad.jsonl:3") {
		t.Fatalf("Validate error %v, want problems at bad.jsonl:2 and :3", err)
	}
	work := t.TempDir()
	if _, err := train.Run(context.Background(), s, work, nil); err == nil {
		t.Fatal("Run accepted bad data")
	}
	if _, err := os.Stat(filepath.Join(work, "checkpoints")); !os.IsNotExist(err) {
		t.Error("a refused run left checkpoints behind")
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want train.Duration
	}{{"3ep", train.Duration{Epochs: 3}}, {"0.5ep", train.Duration{Epochs: 0.5}}, {"500ba", train.Duration{Batches: 500}},
		{"2_000_000tok", train.Duration{Tokens: 2000000}}} {
		got, err := train.ParseDuration(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "3", "ep", "-1ep", "1.5ba", "xtok", "3 epochs"} {
		if _, err := train.ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
}

// Issue 5's precision check: over 200 steps on real chat data, bf16 mode's
// loss curve stays within 1% of fp32 mode's at every step.
func TestBF16LossCurveTracksFP32(t *testing.T) {
	if testing.Short() {
		t.Skip("200 training steps twice")
	}
	model, data := tinyModel(t), chatData(t)
	curves := map[string][]float64{}
	for _, p := range []string{"fp32", "bf16"} {
		s := train.Spec{ModelDir: model, Task: "chat", TrainData: filepath.Join(data, "train.jsonl"),
			Duration: train.Duration{Batches: 200}, LearningRate: 3e-3, ContextLength: 128, BatchRows: 1, Seed: 3, Precision: p}
		rec := &recorder{}
		if _, err := train.Run(context.Background(), s, t.TempDir(), rec); err != nil {
			t.Fatal(err)
		}
		for _, st := range rec.steps {
			curves[p] = append(curves[p], st.Loss)
		}
	}
	f, b := curves["fp32"], curves["bf16"]
	if len(f) != 200 || len(b) != 200 {
		t.Fatalf("got %d and %d steps, want 200", len(f), len(b))
	}
	worst, at := 0.0, 0
	for i := range f {
		if d := math.Abs(b[i]-f[i]) / f[i]; d > worst {
			worst, at = d, i
		}
	}
	t.Logf("loss %.3f -> %.3f (fp32), %.3f -> %.3f (bf16); largest relative gap %.4f at step %d", f[0], f[199], b[0], b[199], worst, at+1)
	if worst > 0.01 {
		t.Errorf("bf16 loss differs from fp32 by %.2f%% at step %d (%.4f vs %.4f); want within 1%%", 100*worst, at+1, b[at], f[at])
	}
	if !(f[199] < 0.5*f[0]) {
		t.Errorf("fp32 loss only went from %.3f to %.3f in 200 steps", f[0], f[199])
	}
}
