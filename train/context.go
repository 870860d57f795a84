package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"hone/engine"
)

// contextFile keeps the context length a run chose by default, so that a
// resumed run keeps its rows (and its data and checkpoints still match)
// even if the machine has more or less memory free on the second start.
const contextFile = "context_length.json"

// legacyDefaultContext capped the default context length before runs
// chose the model's maximum: a run started then (checkpoints in its work
// dir, no contextFile) resumes at min(maximum, it), with the settings
// fingerprint of an unset length (Spec.legacyContext).
const legacyDefaultContext = 2048

// contextChoice is the context length a run trains at and why.
type contextChoice struct {
	Length int    `json:"context_length"`
	Why    string `json:"why"`
	// Legacy marks the default of a run started before the default was
	// the model's maximum (legacyDefaultContext).
	Legacy bool `json:"legacy_default,omitempty"`
}

// chooseContext settles the run's context length before any data is
// prepared or memory allocated. An explicit length must be within the
// model's max_position_embeddings and fit in avail bytes (0: what the
// machine has free) with the savings Fit turns on; the refusal gives the
// plan's numbers and what would fit. Unset (0), it is the model's maximum,
// shortened to the longest that fits; workDir (when not empty) keeps the
// choice for a resumed run.
func chooseContext(spec Spec, cfg *engine.Config, dev engine.Device, workDir string, avail int64) (contextChoice, error) {
	max := cfg.MaxPositionEmbeddings
	opts, err := baseOptions(spec, cfg)
	if err != nil {
		return contextChoice{}, err
	}
	if n := spec.ContextLength; n > 0 {
		if max > 0 && n > max {
			return contextChoice{}, fmt.Errorf("context_length %d exceeds the model's maximum %d (max_position_embeddings in %s); use at most %d",
				n, max, filepath.Join(spec.ModelDir, "config.json"), max)
		}
		if _, _, err := cfg.Fit(dev, opts, spec.BatchRows, n, avail); err != nil {
			adviseNodes(err, spec, cfg, dev, opts, n, avail)
			return contextChoice{}, fmt.Errorf("context_length %d, batch_rows %d: %w", n, spec.BatchRows, err)
		}
		return contextChoice{Length: n, Why: "as set"}, nil
	}
	if max <= 0 {
		return contextChoice{}, fmt.Errorf("context_length: the model's config.json has no max_position_embeddings; set context_length")
	}
	if workDir != "" {
		if b, err := os.ReadFile(filepath.Join(workDir, contextFile)); err == nil {
			var c contextChoice
			if err := json.Unmarshal(b, &c); err != nil || c.Length <= 0 || c.Length > max {
				return contextChoice{}, fmt.Errorf("%s: not a context length choice of this model (%v); remove it to choose again", filepath.Join(workDir, contextFile), err)
			}
			c.Why = "as chosen when the run started: " + c.Why
			return c, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return contextChoice{}, err
		}
		ckpts, err := scanCheckpoints(workDir, keepLeftovers)
		if err != nil {
			return contextChoice{}, err
		}
		if len(ckpts) > 0 { // started before the choice was kept: the default then
			c := contextChoice{Length: min(max, legacyDefaultContext), Legacy: true,
				Why: fmt.Sprintf("as when the run started, whose default was the model's maximum %d capped at %d", max, legacyDefaultContext)}
			return c, saveContext(workDir, c)
		}
	}
	if avail <= 0 {
		avail = engine.MemAvailable()
	}
	var c contextChoice
	switch n := cfg.LongestContext(dev, opts, spec.BatchRows, max, avail); {
	case avail <= 0 || n == max:
		c = contextChoice{Length: max, Why: fmt.Sprintf("the model's maximum (max_position_embeddings %d)", max)}
	case n < 2:
		_, _, err := cfg.Fit(dev, opts, spec.BatchRows, 2, avail)
		adviseNodes(err, spec, cfg, dev, opts, 2, avail)
		return contextChoice{}, fmt.Errorf("context_length: not even 2 tokens per row fit: %w", err)
	default:
		if n > 256 { // whole blocks of 128 read better and cost nothing
			n = n / 128 * 128
		}
		full := cfg.FittedMemory(dev, opts, spec.BatchRows, max, avail)
		c = contextChoice{Length: n, Why: fmt.Sprintf("the longest that fits: the model's maximum %d needs %.1f GiB at %d rows per micro-batch (%s, with every memory saving), %.1f GiB is available%s",
			max, gib(full), spec.BatchRows, describe(opts), gib(avail), longerOnNodes(spec, cfg, dev, opts, n, max, avail))}
	}
	if workDir != "" {
		return c, saveContext(workDir, c)
	}
	return c, nil
}

// saveContext keeps c in workDir's contextFile.
func saveContext(workDir string, c contextChoice) error {
	b, _ := json.Marshal(c)
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return err
	}
	if err := engine.WriteFileAtomic(filepath.Join(workDir, contextFile), b); err != nil {
		return fmt.Errorf("save the chosen context length: %w", err)
	}
	return nil
}

func gib(b int64) float64 { return float64(b) / (1 << 30) }

// describe names the method and precision opts train with.
func describe(o engine.Options) string {
	s := "full fine-tuning"
	if o.LoRA != nil {
		s = fmt.Sprintf("LoRA rank %d", o.LoRA.Rank)
	}
	if o.BF16 || o.FrozenBF16 {
		return s + ", bf16"
	}
	return s + ", fp32"
}
