package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"

	"hone/safetensors"
)

// The files of a PEFT adapter directory.
const (
	AdapterConfigFile  = "adapter_config.json"
	AdapterWeightsFile = "adapter_model.safetensors"
)

// adapterInfoKeys are adapter_config.json keys that describe how the adapter
// was made or is used, not what it computes, so any value is accepted.
var adapterInfoKeys = map[string]bool{
	"inference_mode": true, "init_lora_weights": true, "revision": true, "megatron_core": true,
	"auto_mapping": true, "base_model_name_or_path": true, "peft_version": true,
	"qalora_group_size": true, // used only with use_qalora, which must be off
}

// ParseAdapterConfig reads a PEFT adapter_config.json. Every LoRA feature
// hone does not compute (DoRA, rank patterns, fan_in_fan_out, trained
// biases, extra modules, regex targets...) is refused with its field named;
// an unknown key is accepted only with a value that turns nothing on (null,
// false, "", {} or []), as PEFT writes for features left off.
func ParseAdapterConfig(raw []byte) (LoRAConfig, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return LoRAConfig{}, fmt.Errorf("not a JSON object: %w", err)
	}
	var lc LoRAConfig
	var peftType, taskType, bias *string
	var alpha *float64
	var targets json.RawMessage
	for _, k := range sortedKeys(fields) {
		v := fields[k]
		var err error
		switch k {
		case "peft_type":
			err = json.Unmarshal(v, &peftType)
		case "task_type":
			err = json.Unmarshal(v, &taskType)
		case "r":
			err = json.Unmarshal(v, &lc.Rank)
		case "lora_alpha":
			err = json.Unmarshal(v, &alpha)
		case "lora_dropout":
			err = json.Unmarshal(v, &lc.Dropout)
		case "use_rslora":
			err = json.Unmarshal(v, &lc.RSLoRA)
		case "target_modules":
			targets = v
		case "bias":
			err = json.Unmarshal(v, &bias)
		case "layers_to_transform":
			err = parseLayers(&lc, v)
		case "layers_pattern": // where layers_to_transform counts; Llama's decoder list is "layers"
			if s := string(bytes.Join(bytes.Fields(v), nil)); !neutralJSON(v) && s != `"layers"` && s != `["layers"]` {
				return lc, fmt.Errorf("field %q = %s: hone's layers are model.layers; use null or \"layers\"", k, v)
			}
		case "base_model_name_or_path":
			var s *string
			if err = json.Unmarshal(v, &s); err == nil && s != nil {
				lc.BaseModel = *s
			}
		default:
			if !adapterInfoKeys[k] && !neutralJSON(v) {
				return lc, fmt.Errorf("field %q = %s: hone does not support this LoRA feature; remove it or set it to null/false", k, v)
			}
		}
		if err != nil {
			return lc, fmt.Errorf("field %q = %s: %w", k, v, err)
		}
	}
	switch {
	case peftType == nil:
		return lc, fmt.Errorf("field \"peft_type\" is missing; a LoRA adapter has \"peft_type\": \"LORA\"")
	case *peftType != "LORA":
		return lc, fmt.Errorf("field \"peft_type\" = %q: hone loads only \"LORA\" adapters", *peftType)
	case taskType != nil && *taskType != "CAUSAL_LM":
		return lc, fmt.Errorf("field \"task_type\" = %q: hone adapts causal language models; use \"CAUSAL_LM\"", *taskType)
	case lc.Rank <= 0:
		return lc, fmt.Errorf("field \"r\" = %d: the rank must be a positive integer", lc.Rank)
	case alpha == nil || *alpha <= 0 || math.IsInf(*alpha, 0):
		return lc, fmt.Errorf("field \"lora_alpha\" = %s: give a positive number", fields["lora_alpha"])
	case lc.Dropout < 0 || lc.Dropout >= 1:
		return lc, fmt.Errorf("field \"lora_dropout\" = %g: must be in [0, 1)", lc.Dropout)
	case bias != nil && *bias != "none":
		return lc, fmt.Errorf("field \"bias\" = %q: hone trains no biases in adapters; use \"none\"", *bias)
	}
	lc.Alpha = *alpha
	if err := parseTargets(&lc, targets); err != nil {
		return lc, fmt.Errorf("field \"target_modules\" = %s: %w", targets, err)
	}
	return lc, nil
}

// parseLayers reads layers_to_transform: null, a layer index or a list of them.
func parseLayers(lc *LoRAConfig, raw json.RawMessage) error {
	var one *int
	if json.Unmarshal(raw, &one) == nil {
		if one != nil {
			lc.Layers = []int{*one}
		}
		return nil
	}
	if err := json.Unmarshal(raw, &lc.Layers); err != nil {
		return fmt.Errorf("give null, a layer index or a list of layer indices")
	}
	return nil
}

// parseTargets reads target_modules into lc: a list of module names,
// "all-linear" (PEFT's every linear layer but the output head; kept as
// Targets ["all-linear"], which the model resolves), or another string,
// which PEFT reads as a regular expression over module names. Which names a
// model has is checked against it (NewAdapter).
func parseTargets(lc *LoRAConfig, raw json.RawMessage) error {
	if raw == nil {
		return fmt.Errorf("missing; list the projections, e.g. [\"q_proj\", \"v_proj\"]")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		lc.Targets, lc.TargetRegex = nil, s
		if s == "all-linear" {
			lc.Targets, lc.TargetRegex = []string{"all-linear"}, ""
		} else if _, err := regexp.Compile(s); err != nil {
			return fmt.Errorf("not a valid regular expression: %w", err)
		}
		return nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil || len(list) == 0 {
		return fmt.Errorf("give a non-empty list of module names from %v", LoRAModuleNames)
	}
	lc.Targets = nil
	for _, t := range LoRAModuleNames { // a canonical order
		if slices.Contains(list, t) {
			lc.Targets = append(lc.Targets, t)
		}
	}
	for _, t := range list {
		if t == "v1" {
			return fmt.Errorf("%q: DBRX's experts (ffn.experts.mlp.w1, v1, w2) are fused parameters, which PEFT's LoRA cannot wrap; target Wqkv and out_proj", t)
		}
		if !slices.Contains(LoRAModuleNames, t) {
			return fmt.Errorf("%q is not a module hone adapts (%v)", t, LoRAModuleNames)
		}
	}
	return nil
}

// neutralJSON says whether v is null, false, "", {} or [].
func neutralJSON(v json.RawMessage) bool {
	var x any
	if json.Unmarshal(v, &x) != nil {
		return false
	}
	switch x := x.(type) {
	case nil:
		return true
	case bool:
		return !x
	case string:
		return x == ""
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// LoadAdapter reads a PEFT adapter directory for model m (adapter_config.json
// and adapter_model.safetensors) onto m's device. Every tensor the config
// implies must be present with its exact shape, and no other.
func LoadAdapter(dir string, m *Model) (*Adapter, error) { return loadAdapter(dir, m.Config, m.Dev) }

// loadAdapter is LoadAdapter for a model of config c on dev.
func loadAdapter(dir string, c *Config, dev Device) (*Adapter, error) {
	cfgPath := filepath.Join(dir, AdapterConfigFile)
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("load adapter: %w", err)
	}
	lc, err := ParseAdapterConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("load adapter: %s: %w", cfgPath, err)
	}
	wPath := filepath.Join(dir, AdapterWeightsFile)
	st, err := safetensors.Open(wPath)
	if err != nil {
		if _, e := os.Stat(filepath.Join(dir, "adapter_model.bin")); e == nil {
			return nil, fmt.Errorf("load adapter: %s holds adapter_model.bin (pickle), which hone does not read; convert it to %s with PEFT (save_pretrained(..., safe_serialization=True))", dir, AdapterWeightsFile)
		}
		return nil, fmt.Errorf("load adapter: %w", err)
	}
	defer st.Close()
	a, err := NewAdapter(c, dev, lc)
	if err != nil {
		return nil, fmt.Errorf("load adapter: %s: %w", cfgPath, err)
	}
	if err := a.fill(st); err != nil {
		a.Close()
		return nil, fmt.Errorf("load adapter: %s: %w", wPath, err)
	}
	return a, nil
}

func (a *Adapter) fill(st *safetensors.File) error {
	want := map[string]bool{}
	for _, s := range a.Specs {
		want[s.Name] = true
		info, ok := st.Info(s.Name)
		if !ok {
			return fmt.Errorf("tensor %q is missing (r %d, targets %v)", s.Name, a.Config.Rank, a.Config.Targets)
		}
		if !slices.Equal(info.Shape, s.Shape) {
			return fmt.Errorf("tensor %q has shape %v; r and the model's config.json imply %v", s.Name, info.Shape, s.Shape)
		}
		dst := a.Params[s.Offset : s.Offset+s.Size()]
		if err := FillDevice(a.dev, dst, func(host []float32) error { return st.Float32(s.Name, host) }); err != nil {
			return err
		}
	}
	for _, info := range st.Tensors() {
		if !want[info.Name] {
			return fmt.Errorf("unexpected tensor %q: not a lora_A/lora_B of the targets %v of this model", info.Name, a.Config.Targets)
		}
	}
	return nil
}

// Save writes the adapter as a PEFT adapter directory: adapter_config.json
// and adapter_model.safetensors in fp32, each atomically.
func (a *Adapter) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	params := HostView(a.dev, a.Params)
	var tensors []safetensors.Tensor
	for _, s := range a.Specs {
		tensors = append(tensors, safetensors.Tensor{Name: s.Name, Shape: s.Shape, Data: params[s.Offset : s.Offset+s.Size()]})
	}
	if err := safetensors.WriteFile(filepath.Join(dir, AdapterWeightsFile), tensors, safetensors.F32, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("save adapter %s: %w", dir, err)
	}
	lc := a.Config
	var targets any = lc.Targets
	if lc.TargetRegex != "" {
		targets = lc.TargetRegex
	}
	var base any
	if lc.BaseModel != "" {
		base = lc.BaseModel
	}
	b, err := json.MarshalIndent(map[string]any{
		"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lc.Rank, "lora_alpha": lc.Alpha,
		"lora_dropout": lc.Dropout, "target_modules": targets, "use_rslora": lc.RSLoRA,
		"base_model_name_or_path": base, "bias": "none", "fan_in_fan_out": false, "use_dora": false,
		"inference_mode": true, "modules_to_save": nil, "layers_to_transform": lc.Layers,
	}, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(filepath.Join(dir, AdapterConfigFile), append(b, '\n')); err != nil {
		return fmt.Errorf("save adapter %s: %w", dir, err)
	}
	return nil
}

// NumParams is the number of adapter parameters lc makes for config c.
func (lc *LoRAConfig) NumParams(c *Config) (int64, error) {
	on, err := lc.adapted(c)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range c.adapterSpecs(lc.Rank, on) {
		n += int64(s.Size())
	}
	return n, nil
}

// LoadWeights replaces the adapter's weights with those of the PEFT
// directory dir, which must hold exactly a's tensors (a checkpoint of a).
func (a *Adapter) LoadWeights(dir string) error {
	wPath := filepath.Join(dir, AdapterWeightsFile)
	st, err := safetensors.Open(wPath)
	if err != nil {
		return fmt.Errorf("load adapter weights: %w", err)
	}
	defer st.Close()
	if err := a.fill(st); err != nil {
		return fmt.Errorf("load adapter weights: %s: %w", wPath, err)
	}
	return nil
}

// IsAdapterDir says whether dir holds a PEFT adapter (adapter_config.json)
// rather than a model.
func IsAdapterDir(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, AdapterConfigFile))
	return err == nil
}

// AdapterBaseDir is the local model directory a PEFT adapter directory's
// base_model_name_or_path names (a relative path is taken from the adapter
// directory): the base hone trained the adapter on. A hub id or a missing
// directory is refused with the name.
func AdapterBaseDir(dir string) (string, error) {
	cfgPath := filepath.Join(dir, AdapterConfigFile)
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return "", fmt.Errorf("adapter base: %w", err)
	}
	lc, err := ParseAdapterConfig(raw)
	if err != nil {
		return "", fmt.Errorf("adapter base: %s: %w", cfgPath, err)
	}
	if lc.BaseModel == "" {
		return "", fmt.Errorf("adapter base: %s names no base_model_name_or_path; merge it with its base (hone merge)", cfgPath)
	}
	base := lc.BaseModel
	if !filepath.IsAbs(base) {
		base = filepath.Join(dir, base)
	}
	if _, err := os.Stat(filepath.Join(base, "config.json")); err != nil {
		return "", fmt.Errorf("adapter base: %s: base_model_name_or_path %q is not a local model directory; merge it with its base (hone merge)", cfgPath, lc.BaseModel)
	}
	return base, nil
}

// LoadWithAdapter loads dir like Load, or, for a PEFT adapter directory,
// loads its base (AdapterBaseDir) with opt and attaches the adapter
// (Attach), so the model computes and decodes as base and adapter together
// while holding the base as opt says (e.g. only in bf16 with FrozenBF16).
// The model owns the adapter: Close releases it.
func LoadWithAdapter(dir string, dev Device, opt Options) (*Model, error) {
	if !IsAdapterDir(dir) {
		return Load(dir, dev, opt)
	}
	base, err := AdapterBaseDir(dir)
	if err != nil {
		return nil, err
	}
	m, err := Load(base, dev, opt)
	if err != nil {
		return nil, err
	}
	a, err := LoadAdapter(dir, m)
	if err == nil {
		err = m.Attach(a)
	}
	if err != nil {
		if a != nil {
			a.Close()
		}
		m.Close()
		return nil, err
	}
	m.ownedLoRA = a
	return m, nil
}

// ModelFilesDir is where dir's tokenizer and chat template are: dir
// itself, or an adapter directory's base.
func ModelFilesDir(dir string) (string, error) {
	if !IsAdapterDir(dir) {
		return dir, nil
	}
	return AdapterBaseDir(dir)
}
