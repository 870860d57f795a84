package train

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"hone/engine"
	"hone/settings"
)

// LoRASpec holds a method "lora" run's adapter settings. Unset (zero, nil)
// fields take package settings' defaults, except those an Adapter
// directory's config sets (see ResolveAdapter).
type LoRASpec struct {
	Rank    int
	Alpha   float64
	Dropout *float64 // nil = the default; 0 = none
	Targets []string
	RSLoRA  bool
	// QuantizeBase "nf4" holds the frozen base's layer matrices in NF4
	// while training (QLoRA, engine.Options.QuantizeBase); "" keeps them
	// as the precision says.
	QuantizeBase string `json:",omitempty"`
	// QuantizeEmbeddings (with QuantizeBase) holds the embeddings and the
	// output head in NF4 too (engine.Options.NF4Embeddings).
	QuantizeEmbeddings bool `json:",omitempty"`
	// DefaultTargets says Targets were not given: they are the base
	// model's architecture's defaults (engine.Config.DefaultLoRATargets),
	// set once the model is known (Llama's until then).
	DefaultTargets bool `json:",omitempty"`
}

// resolveLoRA fills the LoRA defaults of a method "lora" spec and checks
// the LoRA settings; a full run may not carry any. With an Adapter
// directory, rank, alpha and targets stay as given (ResolveAdapter takes
// them from the adapter's config).
func (s *Spec) resolveLoRA() error {
	if err := settings.CheckMethod(s.Method); err != nil {
		return err
	}
	if s.AdapterOnly && s.Method != "lora" {
		return settings.CheckLoRAOnly("register_adapter", s.Method)
	}
	if s.Method != "lora" {
		var errs []error
		if s.LoRA != nil {
			errs = append(errs, settings.CheckLoRAOnly("lora", s.Method))
		}
		if s.Adapter != "" {
			errs = append(errs, settings.CheckLoRAOnly("adapter_path", s.Method))
		}
		return errors.Join(errs...)
	}
	lo := LoRASpec{}
	if s.LoRA != nil {
		lo = *s.LoRA
		lo.Targets = slices.Clone(lo.Targets)
	}
	if lo.Dropout == nil {
		d := settings.LoRADropout
		lo.Dropout = &d
	}
	var errs []error
	if s.Adapter == "" {
		zeroIsDefault(&lo.Rank, settings.LoRARank)
		if lo.Alpha == 0 {
			lo.Alpha = settings.LoRAAlpha
		}
		if lo.Targets == nil {
			lo.Targets, lo.DefaultTargets = settings.LoRATargets(), true
		}
	}
	if lo.Rank != 0 || s.Adapter == "" {
		errs = append(errs, settings.CheckLoRARank(lo.Rank))
	}
	if lo.Alpha != 0 || s.Adapter == "" {
		errs = append(errs, settings.CheckLoRAAlpha(lo.Alpha))
	}
	if lo.Targets != nil || s.Adapter == "" {
		errs = append(errs, settings.CheckLoRATargets(lo.Targets))
	}
	errs = append(errs, settings.CheckLoRADropout(*lo.Dropout), settings.CheckQuantizeBase(lo.QuantizeBase))
	if lo.QuantizeEmbeddings && lo.QuantizeBase == "" {
		errs = append(errs, &settings.Error{Setting: "lora.quantize_embeddings", Problem: "it quantizes the embeddings of a quantized base, and quantize_base is unset",
			Fix: `set lora.quantize_base to "nf4", or leave quantize_embeddings unset`})
	}
	if s.InitWeights != "" {
		errs = append(errs, &settings.Error{Setting: "custom_weights_path", Problem: "method lora trains an adapter on the base model's own weights",
			Fix: "register the custom weights as a model and name it as the base model, or use method full"})
	}
	s.LoRA = &lo
	*s = s.WithModelLoRATargets()
	return errors.Join(errs...)
}

// WithModelLoRATargets returns s with default LoRA targets replaced by
// those of the base model's architecture (Mixtral's experts, DBRX's Wqkv),
// once ModelDir names it; s as it is otherwise, or when the model's config
// cannot be read (loading the model reports that).
func (s Spec) WithModelLoRATargets() Spec {
	if s.LoRA == nil || !s.LoRA.DefaultTargets || s.ModelDir == "" {
		return s
	}
	cfg, err := engine.LoadConfig(s.ModelDir)
	if err != nil {
		return s
	}
	lo := *s.LoRA
	lo.Targets = cfg.DefaultLoRATargets()
	s.LoRA = &lo
	return s
}

// ResolveAdapter completes a resolved method "lora" spec that continues a
// PEFT adapter directory: the adapter's config sets rank, alpha, rsLoRA and
// targets, since they are what the adapter computes. A setting the request
// gave that disagrees is refused, naming both values. Other specs are
// returned as they are. The caller has confined s.Adapter.
func ResolveAdapter(s Spec) (Spec, error) {
	if s.Method != "lora" || s.Adapter == "" || s.LoRA == nil {
		return s, nil
	}
	cfgPath := filepath.Join(s.Adapter, engine.AdapterConfigFile)
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return s, &settings.Error{Setting: "adapter_path", Problem: err.Error(), Fix: "name a PEFT adapter directory (adapter_config.json, adapter_model.safetensors)"}
	}
	lc, err := engine.ParseAdapterConfig(raw)
	if err != nil {
		return s, &settings.Error{Setting: "adapter_path", Problem: fmt.Sprintf("%s: %v", cfgPath, err), Fix: "use a LoRA adapter saved by PEFT or hone"}
	}
	lo := *s.LoRA
	conflict := func(setting string, given, adapter any) error {
		return &settings.Error{Setting: setting, Problem: fmt.Sprintf("%v conflicts with %v in %s", given, adapter, cfgPath),
			Fix: "leave it unset: the adapter's config sets it"}
	}
	var errs []error
	if lo.Rank != 0 && lo.Rank != lc.Rank {
		errs = append(errs, conflict("lora.rank", lo.Rank, lc.Rank))
	}
	if lo.Alpha != 0 && lo.Alpha != lc.Alpha {
		errs = append(errs, conflict("lora.alpha", lo.Alpha, lc.Alpha))
	}
	if lo.RSLoRA && !lc.RSLoRA {
		errs = append(errs, conflict("lora.use_rslora", true, false))
	}
	targets := lc.Targets
	if lc.TargetRegex != "" || slices.Equal(targets, []string{"all-linear"}) {
		targets = nil // a pattern or all-linear; the adapter's tensors say which modules
	}
	if lo.Targets != nil && !sameSet(lo.Targets, targets) {
		errs = append(errs, conflict("lora.target_modules", strings.Join(lo.Targets, ","), adapterTargets(lc)))
	}
	lo.Rank, lo.Alpha, lo.RSLoRA, lo.Targets = lc.Rank, lc.Alpha, lc.RSLoRA, targets
	s.LoRA = &lo
	return s, errors.Join(errs...)
}

func adapterTargets(lc engine.LoRAConfig) string {
	if lc.TargetRegex != "" {
		return fmt.Sprintf("the pattern %q", lc.TargetRegex)
	}
	return strings.Join(lc.Targets, ",")
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// loraConfig is the engine's configuration of a resolved spec's adapter.
func (s Spec) loraConfig() engine.LoRAConfig {
	return engine.LoRAConfig{Rank: s.LoRA.Rank, Alpha: s.LoRA.Alpha, Dropout: *s.LoRA.Dropout,
		Targets: slices.Clone(s.LoRA.Targets), RSLoRA: s.LoRA.RSLoRA, BaseModel: s.ModelDir}
}

// newAdapter makes the run's adapter on m and attaches it: the adapter of
// Adapter when set (with this run's dropout), else a new one initialised
// as PEFT does from the run's seed.
func newAdapter(spec Spec, m *engine.Model) (*engine.Adapter, error) {
	var a *engine.Adapter
	var err error
	if spec.Adapter != "" {
		if a, err = engine.LoadAdapter(spec.Adapter, m); err != nil {
			return nil, fmt.Errorf("adapter_path: %w", err)
		}
		// This run's dropout; saved adapters name this run's base.
		a.Config.Dropout, a.Config.BaseModel = *spec.LoRA.Dropout, spec.ModelDir
	} else {
		if a, err = engine.NewAdapter(m.Config, m.Dev, spec.loraConfig()); err != nil {
			return nil, fmt.Errorf("lora: %w", err)
		}
		a.InitPEFT(spec.Seed)
	}
	if err := m.Attach(a); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// String describes the settings for the run's log.
func (lo *LoRASpec) String() string {
	scale := lo.Alpha / float64(lo.Rank)
	kind := "alpha/r"
	if lo.RSLoRA {
		scale, kind = lo.Alpha/math.Sqrt(float64(lo.Rank)), "alpha/sqrt(r)"
	}
	base := ""
	if lo.QuantizeBase != "" {
		base = ", base quantized to " + lo.QuantizeBase
		if lo.QuantizeEmbeddings {
			base += " with its embeddings and head"
		}
	}
	return fmt.Sprintf("LoRA rank %d, alpha %g (scale %s = %.4g), dropout %g, targets %s%s",
		lo.Rank, lo.Alpha, kind, scale, *lo.Dropout, strings.Join(lo.Targets, ","), base)
}

// checkAdapter completes and checks a spec that continues an adapter
// directory (Run and Validate; the run service does it at creation).
func (s *Spec) checkAdapter() error {
	var err error
	*s, err = ResolveAdapter(*s)
	return err
}

// dropoutSeed is the LoRA dropout seed of the micro-batch whose first row
// is row k of the run (splitmix64 of the pair).
func dropoutSeed(seed uint64, k int64) uint64 {
	z := seed*0x9e3779b97f4a7c15 + uint64(k) + 1
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// saveFinalLoRA writes the final adapter (PEFT layout) to
// workDir/final-adapter and, unless AdapterOnly, the base with it merged
// (in the base's dtype) to workDir/final. The training model is closed
// first; the merge (engine.MergeDirs) streams the base tensor by tensor.
func (r *runner) saveFinalLoRA() (model, adapter string, err error) {
	model, adapter = filepath.Join(r.workDir, "final"), filepath.Join(r.workDir, "final-adapter")
	for _, d := range []string{model + ".tmp", adapter + ".tmp"} {
		if err := os.RemoveAll(d); err != nil {
			return "", "", err
		}
	}
	// commit renames tmp into place under the observer's fence.
	commit := func(dir, what string) error {
		if err := fence(r.obs, what); err != nil {
			os.RemoveAll(dir + ".tmp")
			return err
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		return os.Rename(dir+".tmp", dir)
	}
	if err := r.a.Save(adapter + ".tmp"); err != nil {
		return "", "", err
	}
	if err := commit(adapter, "final adapter"); err != nil {
		return "", "", err
	}
	if r.spec.AdapterOnly {
		return "", adapter, nil
	}
	dev := r.m.Dev
	r.a.Close()
	r.m.Close()
	r.a, r.m = nil, nil
	if q := r.spec.LoRA.QuantizeBase; q != "" {
		r.obs.OnLog(fmt.Sprintf("merging the adapter into the unquantized base %s (its own dtype), not the %s base it trained on", r.spec.ModelDir, q))
	}
	if err := engine.MergeDirs(r.spec.ModelDir, adapter, model+".tmp", dev); err != nil {
		return "", "", err
	}
	if err := commit(model, "final model"); err != nil {
		return "", "", err
	}
	return model, adapter, nil
}
