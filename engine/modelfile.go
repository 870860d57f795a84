package engine

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"hone/safetensors"
)

// Load reads an HF model directory (config.json and single or sharded
// safetensors in f32, bf16 or f16) into a new model on dev. Every expected
// tensor must be present with its exact shape; an unexpected tensor is
// refused by name, since it means the checkpoint is not the architecture the
// config describes.
func Load(dir string, dev Device, opt Options) (*Model, error) {
	c, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	defer st.Close()
	m := New(c, dev, opt)
	if err := c.CheckQuantizeBase(opt.QuantizeBase); err != nil {
		return nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	if opt.NF4Embeddings && opt.QuantizeBase == "" {
		return nil, fmt.Errorf("load model %s: NF4Embeddings quantizes the embeddings of an NF4 base; set QuantizeBase %q", dir, QuantizeNF4)
	}
	load := loadWeights
	switch {
	case opt.QuantizeBase != "":
		load = loadWeightsNF4
	case opt.FrozenBF16:
		load = loadWeightsBF16
	}
	if err := checkTensors(m.Config, st); err != nil {
		return nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	if err := load(m, st); err != nil {
		return nil, fmt.Errorf("load model %s: %w", dir, err)
	}
	m.ParamsChanged()
	return m, nil
}

// checkTensors holds the checkpoint to exactly the tensors and shapes c
// implies, before anything is read.
func checkTensors(c *Config, st *safetensors.Model) error {
	want := map[string]bool{}
	for _, s := range c.ParamSpecs() {
		want[s.Name] = true
		info, ok := st.Info(s.Name)
		if !ok {
			return fmt.Errorf("tensor %q is missing from the checkpoint (config %s)", s.Name, c.describe())
		}
		if !slices.Equal(info.Shape, s.Shape) {
			return fmt.Errorf("%s: tensor %q has shape %v, config.json implies %v (%s)", st.PathOf(s.Name), s.Name, info.Shape, s.Shape, c.describeShapes())
		}
		if !info.DType.Float32Convertible() {
			return fmt.Errorf("%s: tensor %q has dtype %s; model weights must be F32, BF16 or F16", st.PathOf(s.Name), s.Name, info.DType)
		}
	}
	for _, info := range st.Tensors() {
		if want[info.Name] || ignorableTensor(info.Name, c) {
			continue
		}
		return fmt.Errorf("unexpected tensor %q in checkpoint: not part of a model with this config.json (%s)", info.Name, c.describe())
	}
	return nil
}

func loadWeights(m *Model, st *safetensors.Model) error {
	for _, s := range m.Config.ParamSpecs() {
		dst := m.Params.Arena[s.Offset : s.Offset+s.Size()]
		if err := FillDevice(m.Dev, dst, func(host []float32) error { return st.Float32(s.Name, host) }); err != nil {
			return err
		}
	}
	return nil
}

// ignorableTensor: buffers some exporters save, and a duplicate head in tied checkpoints.
func ignorableTensor(name string, c *Config) bool {
	return strings.HasSuffix(name, ".rotary_emb.inv_freq") || (c.TieWordEmbeddings && name == "lm_head.weight")
}

func (c *Config) describe() string {
	return fmt.Sprintf("%s, %d layers, hidden %d, heads %d/%d, head_dim %d, tied %v, attention_bias %v, mlp_bias %v",
		c.archName(), c.NumHiddenLayers, c.HiddenSize, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.TieWordEmbeddings, c.AttentionBias, c.MLPBias)
}

// SaveOptions control how Save writes weights.
type SaveOptions struct {
	DType         safetensors.DType // default BF16, as HF releases Llama weights
	MaxShardBytes int64             // default safetensors.DefaultMaxShardBytes
	// SourceDir, when set, is the model directory whose config.json fields,
	// tokenizer files and generation_config.json are carried over.
	SourceDir string
}

// filesCopied are the non-weight files of an HF model directory that make the
// output load unchanged wherever the source loaded.
var filesCopied = []string{
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
	"generation_config.json", "chat_template.jinja", "chat_template.json", "LICENSE", "USE_POLICY.md",
}

// Save writes the model's parameters as an HF model directory.
func (m *Model) Save(dir string, opt SaveOptions) error {
	if opt.DType == "" {
		opt.DType = safetensors.BF16
	}
	if m.nf4 != nil {
		return errNF4("save model")
	}
	if m.Opt.FrozenBF16 {
		return errFrozenBF16("save model")
	}
	return SaveArena(m.Config, HostView(m.Dev, m.Params.Arena), dir, opt)
}

// SaveArena writes a whole parameter arena (ParamSpecs' layout, host
// memory) of config c as an HF model directory, as Model.Save does: how
// the leader of a sharded run writes the weights it gathered.
func SaveArena(c *Config, params []float32, dir string, opt SaveOptions) error {
	if opt.DType == "" {
		opt.DType = safetensors.BF16
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	var tensors []safetensors.Tensor
	for _, s := range c.ParamSpecs() {
		tensors = append(tensors, safetensors.Tensor{Name: s.Name, Shape: s.Shape, Data: params[s.Offset : s.Offset+s.Size()]})
	}
	if err := safetensors.WriteModel(dir, tensors, safetensors.WriteOptions{DType: opt.DType, MaxShardBytes: opt.MaxShardBytes}); err != nil {
		return fmt.Errorf("save model %s: %w", dir, err)
	}
	return writeModelFiles(c, dir, opt)
}

// writeModelFiles writes the config.json of c and copies the source's
// other files (filesCopied) beside the weights in dir.
func writeModelFiles(c *Config, dir string, opt SaveOptions) error {
	if err := writeConfig(c, dir, opt); err != nil {
		return err
	}
	if opt.SourceDir != "" && opt.SourceDir != dir {
		for _, name := range filesCopied {
			if err := copyFileAtomic(filepath.Join(opt.SourceDir, name), filepath.Join(dir, name)); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("save model %s: copy %s: %w", dir, name, err)
			}
		}
	}
	return nil
}

// writeConfig keeps every field of the source config.json (so nothing HF
// needs is lost) and sets torch_dtype to what was written.
func writeConfig(c *Config, dir string, opt SaveOptions) error {
	raw := map[string]any{}
	if opt.SourceDir != "" {
		if b, err := os.ReadFile(filepath.Join(opt.SourceDir, "config.json")); err == nil {
			if err := json.Unmarshal(b, &raw); err != nil {
				return fmt.Errorf("save model: parse %s: %w", filepath.Join(opt.SourceDir, "config.json"), err)
			}
		}
	}
	if len(raw) == 0 && c.IsDBRX() {
		raw = c.dbrxConfigJSON()
	}
	if len(raw) == 0 {
		b, _ := json.Marshal(c)
		_ = json.Unmarshal(b, &raw)
		if c.ModelType == "mistral" && c.SlidingWindow == nil {
			raw["sliding_window"] = nil // absent would mean HF's default window
		}
	}
	raw["torch_dtype"] = map[safetensors.DType]string{safetensors.BF16: "bfloat16", safetensors.F16: "float16", safetensors.F32: "float32"}[opt.DType]
	b, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, "config.json"), append(b, '\n'))
}

// WriteFileAtomic writes data to path via a temp file, fsync and rename, so a
// crash leaves either the old file or the new one.
func WriteFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func copyFileAtomic(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	b, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	return WriteFileAtomic(dst, b)
}

// InitRandom fills parameters as hone dev init does: matrices normal(0, 0.02),
// norms 1, biases 0. Each tensor draws from its own stream seeded by (seed,
// index), so tensors fill in parallel and the result depends only on seed.
func (m *Model) InitRandom(seed uint64) {
	if m.nf4 != nil {
		m.initRandomNF4(seed)
		return
	}
	if m.Opt.FrozenBF16 {
		m.initRandomBF16(seed)
		return
	}
	_ = FillDevice(m.Dev, m.Params.Arena, func(arena []float32) error {
		initRandom(m.Config.ParamSpecs(), arena, seed)
		return nil
	})
	m.ParamsChanged()
}

func initRandom(specs []ParamSpec, arena []float32, seed uint64) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for i, s := range specs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			initRandomTensor(i, s, arena[s.Offset:s.Offset+s.Size()], seed)
		}()
	}
	wg.Wait()
}

// initRandomTensor fills dst with spec s (the i-th of ParamSpecs) as
// InitRandom does.
func initRandomTensor(i int, s ParamSpec, dst []float32, seed uint64) {
	switch {
	case !s.Decay && !strings.HasSuffix(s.Name, ".bias"): // a norm's weight
		for j := range dst {
			dst[j] = 1
		}
	case strings.HasSuffix(s.Name, ".bias"):
		clear(dst)
	default:
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		for j := range dst {
			dst[j] = float32(0.02 * r.NormFloat64())
		}
	}
}
