package runs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"hone/client"
	"hone/dataset"
	"hone/store"
	"hone/train"
)

// progressGate is a gateTrainer that, before it is held, reports having
// read the first half of the training file's lines, as dataset.Validate
// does part-way.
type progressGate struct{ *gateTrainer }

func (g progressGate) ValidateProgress(ctx context.Context, spec train.Spec, progress func(dataset.Progress)) (string, error) {
	b, err := os.ReadFile(spec.TrainData)
	if err != nil {
		return "", err
	}
	lines := strings.SplitAfter(string(b), "\n")
	half := len(strings.Join(lines[:len(lines)/2], ""))
	progress(dataset.Progress{BytesRead: int64(half), TotalBytes: int64(len(b)), Records: int64(len(lines) / 2)})
	return g.Validate(ctx, spec)
}

// TestBackgroundValidationReportsProgress: while a background validation
// is held mid-way, its periodic VALIDATING event gives the bytes read of
// the total, the records checked and the percent.
func TestBackgroundValidationReportsProgress(t *testing.T) {
	f, g, req := largeFixture(t)
	f.s.tr = progressGate{g}
	f.s.cfg.PollEvery = 5 * time.Millisecond
	f.s.cfg.ValidateProgressEvery = time.Nanosecond
	// 1 MiB of data, so the MiB figures are not all 0.0.
	line := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 1000) + `"},{"role":"assistant","content":"y"}]}` + "\n"
	write(t, filepath.Join(f.data, "big.jsonl"), strings.Repeat(line, 1<<20/len(line)+1))
	run, err := f.s.Create(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != client.StatusPending {
		t.Fatalf("create answered %s, want PENDING", run.Status)
	}
	<-g.entered
	re := regexp.MustCompile(`^validating: ([0-9.]+) of ([0-9.]+) MiB read, (\d+) records checked \((\d+)%, `)
	var m []string
	deadline := time.Now().Add(20 * time.Second) // a bound for a hang, not a speed check
	for m == nil {
		for _, e := range eventTypes(t, f.st, run.Name) {
			if e.Type == "VALIDATING" {
				if m = re.FindStringSubmatch(e.Message); m != nil {
					break
				}
			}
		}
		if m == nil && time.Now().After(deadline) {
			t.Fatalf("no VALIDATING progress event; events %+v", eventTypes(t, f.st, run.Name))
		}
		time.Sleep(5 * time.Millisecond)
	}
	read, _ := strconv.ParseFloat(m[1], 64)
	total, _ := strconv.ParseFloat(m[2], 64)
	records, _ := strconv.Atoi(m[3])
	pct, _ := strconv.Atoi(m[4])
	if read <= 0 || read > total || records <= 0 || records > 1<<20/len(line)+1 || pct <= 0 || pct > 100 {
		t.Fatalf("progress event %q: want 0 < read <= total, records > 0 and 0 < percent <= 100", m[0])
	}
	if pct != 49 && pct != 50 {
		t.Fatalf("progress event %q: want about 50%% (half the lines read)", m[0])
	}
	g.result <- nil
	waitRun(t, f.st, run.Name, store.StatusQueued)
}

// TestBackgroundValidationKeepsReport: a background-validated run keeps
// its data report, queued or failed, as an inline-validated one does.
func TestBackgroundValidationKeepsReport(t *testing.T) {
	f, g, req := largeFixture(t)
	const report = `{"stats":{"examples":4,"tokens":40}}` // gateTrainer's
	for _, fail := range []bool{false, true} {
		run, err := f.s.Create(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		<-g.entered
		if got := f.s.view(f.get(t, run.Name)).Validation; got != "" {
			t.Fatalf("while validating: validation %q, want none yet", got)
		}
		want := store.StatusQueued
		if fail {
			g.result <- errors.New("big.jsonl:3: bad")
			want = store.StatusFailed
		} else {
			g.result <- nil
		}
		r := waitRun(t, f.st, run.Name, want)
		if got := f.s.view(r); got.Validation != report || got.Config.TrainDataPath != req.TrainDataPath {
			t.Fatalf("%s run: validation %q, config %+v; want the report %s and the request kept", want, got.Validation, got.Config, report)
		}
	}
}
