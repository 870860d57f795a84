package train_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/dataset"
	"hone/train"
)

// TestValidateProgressCountsEvalOnTop: the eval data's progress follows
// the training data's, summed, ending at both files' bytes and lines.
func TestValidateProgressCountsEvalOnTop(t *testing.T) {
	model := tinyModel(t)
	dir := t.TempDir()
	line := `{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}` + "\n"
	trainData, evalData := filepath.Join(dir, "train.jsonl"), filepath.Join(dir, "eval.jsonl")
	if err := os.WriteFile(trainData, []byte(strings.Repeat(line, 5)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(evalData, []byte(strings.Repeat(line, 3)), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []dataset.Progress
	s := train.Spec{ModelDir: model, Task: "chat", TrainData: trainData, EvalData: evalData}
	if _, err := train.ValidateProgress(context.Background(), s, func(p dataset.Progress) { got = append(got, p) }); err != nil {
		t.Fatal(err)
	}
	n := int64(len(line))
	var prev dataset.Progress
	for i, p := range got {
		if p.BytesRead < prev.BytesRead || p.Records < prev.Records || p.BytesRead > p.TotalBytes {
			t.Fatalf("report %d: %+v after %+v", i, p, prev)
		}
		prev = p
	}
	if prev != (dataset.Progress{BytesRead: 8 * n, TotalBytes: 8 * n, Records: 8}) {
		t.Fatalf("last report %+v, want %d bytes of %d and 8 records", prev, 8*n, 8*n)
	}
}
