package train_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/train"
)

// fencer refuses commits whose name has the prefix refuse.
type fencer struct {
	recorder
	refuse string
	asked  []string
}

var errStale = errors.New("lease lost")

func (f *fencer) Fence(what string) error {
	f.asked = append(f.asked, what)
	if f.refuse != "" && strings.HasPrefix(what, f.refuse) {
		return errStale
	}
	return nil
}

// The trainer commits a checkpoint or the final model only when the
// observer's fence allows it, asked just before the rename: a refused
// commit leaves nothing behind (no checkpoint, no temporary directory, no
// pruning, no final model) and ends the run with the fence's error.
func TestCommitsAreFenced(t *testing.T) {
	model, data := tinyModel(t), chatData(t)
	s := spec(model, data)
	s.EvalData, s.KeepCheckpoints = "", 1
	for _, tc := range []struct {
		refuse    string
		wantSteps []int // checkpoints on disk afterwards
		asked     int
	}{
		{"checkpoint of step 6", []int{3}, 2},
		{"final model", []int{8}, 4},
	} {
		t.Run(tc.refuse, func(t *testing.T) {
			work := t.TempDir()
			obs := &fencer{refuse: tc.refuse}
			if _, err := train.Run(context.Background(), s, work, obs); !errors.Is(err, errStale) {
				t.Fatalf("Run with the fence refusing %q = %v, want the fence's error", tc.refuse, err)
			}
			if len(obs.asked) != tc.asked || obs.asked[len(obs.asked)-1] != tc.refuse {
				t.Errorf("fence asked for %q, want %d commits ending with %q", obs.asked, tc.asked, tc.refuse)
			}
			cks, err := train.Checkpoints(work)
			if err != nil {
				t.Fatal(err)
			}
			var steps []int
			for _, c := range cks {
				steps = append(steps, c.Step)
			}
			if !slices.Equal(steps, tc.wantSteps) {
				t.Errorf("checkpoints on disk %v, want %v", steps, tc.wantSteps)
			}
			left, _ := filepath.Glob(filepath.Join(work, "checkpoints", "*.tmp"))
			final, _ := filepath.Glob(filepath.Join(work, "final*"))
			if len(left)+len(final) != 0 {
				t.Errorf("a refused commit left %v %v", left, final)
			}
			if _, err := os.Stat(filepath.Join(work, "final")); !os.IsNotExist(err) {
				t.Errorf("final model written despite the fence: %v", err)
			}
		})
	}
}
