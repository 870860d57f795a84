package train

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"hone/engine"
	"hone/optim"
	"hone/safetensors"
)

// A checkpoint directory checkpoints/step-NNNNNNNN holds:
//
//	model/                 the weights in HF layout, f32 so resuming is exact
//	adapter/               instead of model/ for a LoRA run: the adapter in
//	                       PEFT layout (f32); the base is frozen, so it is not saved
//	optimizer.safetensors  the optimizer's state, flat (P, or the adapter's
//	                       parameters): AdamW's exp_avg and exp_avg_sq,
//	                       LionW's exp_avg
//	state.json             the step and the fingerprints it belongs to
//
// It is written under a temporary name and renamed into place, so a crash
// leaves either no checkpoint or a complete one.
type ckptState struct {
	Step            int     `json:"step"`
	Epoch           float64 `json:"epoch"`
	TokensSeen      int64   `json:"tokens_seen"`
	DataFingerprint string  `json:"data_fingerprint"`
	SpecFingerprint string  `json:"spec_fingerprint"`
	LastLoss        float64 `json:"last_loss"`
}

const ckptPrefix = "step-"

func ckptRoot(workDir string) string { return filepath.Join(workDir, "checkpoints") }

// saveCheckpoint writes st's checkpoint and prunes all but the newest keep,
// returning its directory and the steps it pruned. The checkpoint is
// committed (renamed into place, older ones pruned) only if fence, called
// just before, allows it; otherwise the temporary copy is removed.
// a is the adapter of a LoRA run, nil for full fine-tuning.
func saveCheckpoint(workDir, sourceDir string, m *engine.Model, a *engine.Adapter, o optim.Optimizer, st ckptState, keep int, fence func() error) (string, []int, error) {
	final, tmp := ckptDir(workDir, st.Step)
	if err := os.RemoveAll(tmp); err != nil {
		return "", nil, err
	}
	if a != nil {
		if err := a.Save(filepath.Join(tmp, "adapter")); err != nil {
			return "", nil, fmt.Errorf("save checkpoint: %w", err)
		}
	} else if err := m.Save(filepath.Join(tmp, "model"), engine.SaveOptions{DType: safetensors.F32, SourceDir: sourceDir}); err != nil {
		return "", nil, fmt.Errorf("save checkpoint: %w", err)
	}
	// The state lives on the model's device: read it through host views.
	var state []safetensors.Tensor
	for _, s := range o.State() {
		state = append(state, safetensors.Tensor{Name: s.Name, Shape: []int{len(s.Buf)}, Data: engine.HostView(m.Dev, s.Buf)})
	}
	if err := safetensors.WriteFile(filepath.Join(tmp, "optimizer.safetensors"), state,
		safetensors.F32, map[string]string{"step": fmt.Sprint(o.StepCount())}); err != nil {
		return "", nil, fmt.Errorf("save checkpoint: %w", err)
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := engine.WriteFileAtomic(filepath.Join(tmp, "state.json"), b); err != nil {
		return "", nil, fmt.Errorf("save checkpoint: %w", err)
	}
	pruned, err := commitCheckpoint(workDir, tmp, final, keep, fence)
	return final, pruned, err
}

// ckptDir is the directory of step's checkpoint and the temporary one it
// is written in.
func ckptDir(workDir string, step int) (final, tmp string) {
	final = filepath.Join(ckptRoot(workDir), fmt.Sprintf("%s%08d", ckptPrefix, step))
	return final, final + ".tmp"
}

// commitCheckpoint renames the written checkpoint tmp to final if fence
// allows it (else removes tmp), then prunes all but the newest keep.
func commitCheckpoint(workDir, tmp, final string, keep int, fence func() error) ([]int, error) {
	root := ckptRoot(workDir)
	if err := fence(); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	if err := os.RemoveAll(final); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return nil, fmt.Errorf("save checkpoint: %w", err)
	}
	if d, err := os.Open(root); err == nil {
		d.Sync()
		d.Close()
	}
	// Keep the newest `keep` checkpoints.
	steps, _ := listCheckpoints(workDir)
	var pruned []int
	for i := 0; i < len(steps)-keep; i++ {
		if err := os.RemoveAll(steps[i]); err != nil {
			continue // still on disk: still listed
		}
		if n, ok := ckptStep(steps[i]); ok {
			pruned = append(pruned, n)
		}
	}
	return pruned, nil
}

// ckptStep reads the step from a checkpoint directory's name.
func ckptStep(dir string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), ckptPrefix))
	return n, err == nil
}

// listCheckpoints returns complete checkpoint dirs, oldest first, and
// removes leftovers of interrupted writes (only the trainer of the work
// dir may call it: a leftover may be its own write in progress).
func listCheckpoints(workDir string) ([]string, error) {
	return scanCheckpoints(workDir, removeLeftovers)
}

// leftovers says what scanCheckpoints does with temporary dirs.
type leftovers bool

const (
	keepLeftovers   leftovers = false
	removeLeftovers leftovers = true
)

// scanCheckpoints lists complete checkpoint dirs, oldest first; with
// removeLeftovers, it also removes the temporary dirs of interrupted writes.
func scanCheckpoints(workDir string, tmp leftovers) ([]string, error) {
	entries, err := os.ReadDir(ckptRoot(workDir))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, ckptPrefix) {
			continue
		}
		p := filepath.Join(ckptRoot(workDir), name)
		if strings.HasSuffix(name, ".tmp") {
			if tmp == removeLeftovers {
				os.RemoveAll(p)
			}
			continue
		}
		if _, err := os.Stat(filepath.Join(p, "state.json")); err == nil {
			dirs = append(dirs, p)
		}
	}
	sort.Strings(dirs)
	return dirs, nil
}

// Checkpoints lists the complete checkpoints in workDir, oldest first
// (Pruned is empty). It only reads: a checkpoint being written meanwhile is
// left alone.
func Checkpoints(workDir string) ([]Checkpoint, error) {
	dirs, err := scanCheckpoints(workDir, keepLeftovers)
	if err != nil {
		return nil, err
	}
	out := make([]Checkpoint, 0, len(dirs))
	for _, d := range dirs {
		st, err := readState(d)
		if err != nil {
			return nil, err
		}
		out = append(out, Checkpoint{Step: st.Step, Epoch: st.Epoch, Dir: d})
	}
	return out, nil
}

// loadCheckpoint restores weights and optimizer state into m (or the
// adapter a of a LoRA run) and o.
func loadCheckpoint(dir string, m *engine.Model, a *engine.Adapter, o optim.Optimizer) (ckptState, error) {
	st, err := readState(dir)
	if err != nil {
		return st, err
	}
	if _, serr := os.Stat(filepath.Join(dir, "shards", "manifest.json")); serr == nil && a == nil {
		return st, loadFromShards(dir, m, o, st)
	}
	if a != nil {
		err = a.LoadWeights(filepath.Join(dir, "adapter"))
	} else {
		err = restoreWeights(m, filepath.Join(dir, "model"))
	}
	if err != nil {
		return st, fmt.Errorf("restore checkpoint %s: %w", dir, err)
	}
	f, err := safetensors.Open(filepath.Join(dir, "optimizer.safetensors"))
	if err != nil {
		return st, err
	}
	defer f.Close()
	for _, s := range o.State() {
		if err := engine.FillDevice(m.Dev, s.Buf, func(host []float32) error { return f.Float32(s.Name, host) }); err != nil {
			return st, fmt.Errorf("restore checkpoint %s: %w", dir, err)
		}
	}
	o.SetStepCount(st.Step)
	m.ParamsChanged()
	return st, nil
}

// restoreWeights reads m's weights from the HF directory dir. Parameters
// live on the model's device: each is filled through host memory.
func restoreWeights(m *engine.Model, dir string) error {
	w, err := safetensors.OpenModel(dir)
	if err != nil {
		return err
	}
	defer w.Close()
	for _, s := range m.Config.ParamSpecs() {
		dst := m.Params.Arena[s.Offset : s.Offset+s.Size()]
		if err := engine.FillDevice(m.Dev, dst, func(host []float32) error { return w.Float32(s.Name, host) }); err != nil {
			return err
		}
	}
	return nil
}

// readState reads a checkpoint's state.json.
func readState(dir string) (ckptState, error) {
	var st ckptState
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", filepath.Join(dir, "state.json"), err)
	}
	return st, nil
}

// loadFromShards restores a sharded run's checkpoint into an unsharded
// model m and optimizer o (whole state: one process, or the leader of a
// run with the optimizer sharded, which deals it out).
func loadFromShards(dir string, m *engine.Model, o optim.Optimizer, st ckptState) error {
	rd, err := openStateReader(dir, m.Config)
	if err != nil {
		return fmt.Errorf("restore checkpoint %s: %w", dir, err)
	}
	defer rd.Close()
	bufs := map[string][]float32{"params": m.Params.Arena}
	for _, s := range o.State() {
		bufs[s.Name] = s.Buf
	}
	for name, buf := range bufs {
		if err := engine.FillDevice(m.Dev, buf, func(host []float32) error { return rd.read(name, 0, len(host), host) }); err != nil {
			return fmt.Errorf("restore checkpoint %s: %s: %w", dir, name, err)
		}
	}
	o.SetStepCount(st.Step)
	m.ParamsChanged()
	return nil
}
