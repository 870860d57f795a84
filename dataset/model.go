package dataset

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"hone/chattemplate"
	"hone/engine"
	"hone/safetensors"
	"hone/tokenizer"
)

// model is what formatting and tokenizing need from a model directory.
type model struct {
	dir        string
	tok        *tokenizer.Tokenizer
	sp         tokenizer.Special
	tpl        *chattemplate.Template // chat only
	maxContext int                    // max_position_embeddings; 0 when unknown
	ctxLen     int
	padID      int
	now        time.Time // the clock templates see (strftime_now), fixed per run
}

// loadModel reads the tokenizer, the chat template (chat only) and the
// context length of the model in dir.
func loadModel(dir string, task Task, ctxLen int) (*model, error) {
	m := &model{dir: dir, now: time.Now()}
	var err error
	if m.tok, err = tokenizer.LoadDir(dir); err != nil {
		return nil, fmt.Errorf("dataset: model %s: %w", dir, err)
	}
	m.sp = m.tok.Special()
	if task == Chat {
		m.tpl, err = chattemplate.FromModelDir(dir)
		if errors.Is(err, chattemplate.ErrNoTemplate) {
			return nil, fmt.Errorf("dataset: model %s has no chat template (tokenizer_config.json has no chat_template): chat data is rendered with the model's own template; use a model that has one, or --task instruct", dir)
		}
		if err != nil {
			return nil, fmt.Errorf("dataset: model %s: chat template: %w", dir, err)
		}
	}
	if m.sp.EOS < 0 && task != Chat {
		return nil, fmt.Errorf("dataset: model %s: the tokenizer has no EOS token, which %s data needs", dir, task)
	}
	cfg, err := engine.LoadConfig(dir)
	switch {
	case err == nil:
		m.maxContext = cfg.MaxPositionEmbeddings
	case errors.Is(err, fs.ErrNotExist):
		if ctxLen == 0 {
			return nil, fmt.Errorf("dataset: model %s has no config.json: give the context length explicitly", dir)
		}
	default:
		return nil, fmt.Errorf("dataset: model %s: %w", dir, err)
	}
	switch {
	case ctxLen == 0:
		ctxLen = min(m.maxContext, MaxDefaultContext)
		if ctxLen <= 0 {
			return nil, fmt.Errorf("dataset: model %s: config.json has no max_position_embeddings: give the context length explicitly", dir)
		}
	case m.maxContext > 0 && ctxLen > m.maxContext:
		return nil, fmt.Errorf("dataset: context length %d exceeds the model's maximum %d (max_position_embeddings)", ctxLen, m.maxContext)
	case ctxLen < 2:
		return nil, fmt.Errorf("dataset: context length %d is too small", ctxLen)
	}
	m.ctxLen = ctxLen
	m.padID = m.sp.PAD
	if m.padID < 0 {
		m.padID = m.sp.EOS
	}
	if m.padID < 0 {
		m.padID = 0 // never scored and never attended to: any id in range will do
	}
	return m, nil
}

// checkWeights holds the model's safetensors headers to its config.json
// (engine.CheckModelFiles) when the directory has weights: data can be
// checked against a tokenizer-only directory, but weights that would fail
// to load are refused here rather than after a run's data preparation.
func checkWeights(dir string) error {
	for _, name := range []string{safetensors.SingleFileName, safetensors.IndexFileName} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			if _, err := engine.CheckModelFiles(dir); err != nil {
				return fmt.Errorf("dataset: %w", err)
			}
			return nil
		}
	}
	return nil
}

// templateSource is the chat template text ("" when none was loaded).
func (m *model) templateSource() string {
	if m.tpl == nil {
		return ""
	}
	return m.tpl.Source()
}

// modelFiles are the files of the model directory that change tokens.
func (m *model) modelFiles() []string {
	var out []string
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		p := filepath.Join(m.dir, name)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}
