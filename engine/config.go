package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// Config is the subset of a Hugging Face LlamaForCausalLM,
// MistralForCausalLM or MixtralForCausalLM config.json that determines the
// math. Fields are named as in config.json. Mistral is Llama plus
// sliding-window attention; Mixtral adds experts (moe.go). A DBRX
// config.json has its own layout, mapped onto these fields (dbrx.go).
type Config struct {
	Architectures         []string     `json:"architectures,omitempty"`
	ModelType             string       `json:"model_type"`
	VocabSize             int          `json:"vocab_size"`
	HiddenSize            int          `json:"hidden_size"`
	IntermediateSize      int          `json:"intermediate_size"`
	NumHiddenLayers       int          `json:"num_hidden_layers"`
	NumAttentionHeads     int          `json:"num_attention_heads"`
	NumKeyValueHeads      int          `json:"num_key_value_heads,omitempty"`
	HeadDim               int          `json:"head_dim,omitempty"`
	RMSNormEps            float64      `json:"rms_norm_eps"`
	RopeTheta             float64      `json:"rope_theta,omitempty"`
	RopeScaling           *RopeScaling `json:"rope_scaling"`
	MaxPositionEmbeddings int          `json:"max_position_embeddings"`
	TieWordEmbeddings     bool         `json:"tie_word_embeddings"`
	AttentionBias         bool         `json:"attention_bias"`
	MLPBias               bool         `json:"mlp_bias"`
	HiddenAct             string       `json:"hidden_act,omitempty"`
	BOSTokenID            TokenIDs     `json:"bos_token_id,omitempty"`
	EOSTokenID            TokenIDs     `json:"eos_token_id,omitempty"`
	TorchDtype            string       `json:"torch_dtype,omitempty"`
	// SlidingWindow (Mistral only): a query attends to keys less than this
	// many positions behind it; nil (config.json null) is full attention.
	SlidingWindow *int `json:"sliding_window,omitempty"`

	// Mixtral's sparse mixture of experts (see moe.go): each layer's MLP is
	// NumLocalExperts SwiGLU experts of which a router picks
	// NumExpertsPerTok per token. With OutputRouterLogits the training loss
	// adds RouterAuxLossCoef times HF's load-balancing loss.
	NumLocalExperts    int     `json:"num_local_experts,omitempty"`
	NumExpertsPerTok   int     `json:"num_experts_per_tok,omitempty"`
	RouterAuxLossCoef  float64 `json:"router_aux_loss_coef,omitempty"`
	OutputRouterLogits bool    `json:"output_router_logits,omitempty"`
	RouterJitterNoise  float64 `json:"router_jitter_noise,omitempty"`
	// NumExperts (Qwen-MoE and others) is present only to refuse such
	// configs by name.
	NumExperts int `json:"num_experts,omitempty"`

	// DBRX only (see dbrx.go), mapped from its own config layout: the
	// clamp on the query/key/value projection (nil: none) and the p of the
	// p-norm the chosen experts' weights are divided by (nil: none).
	ClipQKV     *float64 `json:"-"`
	ExpertNormP *float64 `json:"-"`
	dbrx        *dbrxJSON
	dbrxRaw     []byte
}

// RopeScaling is config.json's rope_scaling object. HF accepts the type under
// "rope_type" or the older "type".
type RopeScaling struct {
	RopeType                      string  `json:"rope_type,omitempty"`
	Type                          string  `json:"type,omitempty"`
	Factor                        float64 `json:"factor"`
	LowFreqFactor                 float64 `json:"low_freq_factor,omitempty"`
	HighFreqFactor                float64 `json:"high_freq_factor,omitempty"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings,omitempty"`
}

// Kind returns the scaling type ("linear", "llama3" or "default").
func (r *RopeScaling) Kind() string {
	if r == nil {
		return "default"
	}
	if r.RopeType != "" {
		return r.RopeType
	}
	if r.Type != "" {
		return r.Type
	}
	return "default"
}

// TokenIDs holds a token id field that config.json writes as an int or a list.
type TokenIDs []int

// UnmarshalJSON accepts null, an int or a list of ints.
func (t *TokenIDs) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = nil
		return nil
	}
	var one int
	if err := json.Unmarshal(b, &one); err == nil {
		*t = TokenIDs{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want an int or a list of ints, got %s", b)
	}
	*t = many
	return nil
}

// MarshalJSON writes a single id as an int, as HF does.
func (t TokenIDs) MarshalJSON() ([]byte, error) {
	if len(t) == 1 {
		return json.Marshal(t[0])
	}
	return json.Marshal([]int(t))
}

// ErrUnsupported marks a config hone cannot train; the message names the field.
var ErrUnsupported = errors.New("unsupported model config")

// LoadConfig reads and validates dir/config.json.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read model config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes config.json bytes, fills HF defaults and validates.
func ParseConfig(b []byte) (*Config, error) {
	c := &Config{RMSNormEps: 1e-6, RopeTheta: 10000, HiddenAct: "silu", MaxPositionEmbeddings: 2048}
	if mt, err := modelType(b); err != nil {
		return nil, err
	} else if mt == "mixtral" {
		*c = mixtralDefaults()
	} else if mt == "dbrx" {
		return parseDBRX(b)
	}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("parse config.json: %w", err)
	}
	if c.ModelType == "mistral" {
		if err := c.defaultWindow(b); err != nil {
			return nil, err
		}
	}
	if c.NumKeyValueHeads == 0 {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if c.HeadDim == 0 && c.NumAttentionHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	return c, c.Validate()
}

// mistralDefaultWindow is MistralConfig's default sliding_window: HF uses it
// when config.json has no such key, while an explicit null turns the window
// off (Mistral-7B-Instruct-v0.2).
const mistralDefaultWindow = 4096

// defaultWindow applies HF's default when sliding_window is absent.
func (c *Config) defaultWindow(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("parse config.json: %w", err)
	}
	if _, ok := raw["sliding_window"]; !ok {
		w := mistralDefaultWindow
		c.SlidingWindow = &w
	}
	return nil
}

// Window is the attention window passed to the device: sliding_window for
// Mistral and Mixtral, 0 (full causal attention) otherwise. Llama ignores
// the key, as HF's LlamaForCausalLM does.
func (c *Config) Window() int {
	if (c.ModelType != "mistral" && c.ModelType != "mixtral") || c.SlidingWindow == nil {
		return 0
	}
	return *c.SlidingWindow
}

// architectures maps each model_type hone trains to its HF class.
var architectures = map[string]string{"": "LlamaForCausalLM", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
	"mixtral": "MixtralForCausalLM", "dbrx": "DbrxForCausalLM"}

// archName is the HF class the config describes.
func (c *Config) archName() string { return architectures[c.ModelType] }

// Validate refuses configs whose math hone does not implement, naming the field.
func (c *Config) Validate() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w: field %q: %s", ErrUnsupported, field, fmt.Sprintf(format, a...))
	}
	arch, ok := architectures[c.ModelType]
	if !ok {
		return bad("model_type", "%q is not supported; hone trains the Llama, Mistral, Mixtral and DBRX architectures (model_type \"llama\", \"mistral\", \"mixtral\" or \"dbrx\")", c.ModelType)
	}
	for _, a := range c.Architectures {
		if a != arch {
			return bad("architectures", "%q is not supported with model_type %q; want %s", a, c.ModelType, arch)
		}
	}
	if (c.ModelType == "mistral" || c.ModelType == "mixtral") && c.SlidingWindow != nil && *c.SlidingWindow <= 0 {
		return bad("sliding_window", "must be a positive integer or null (full attention), got %d", *c.SlidingWindow)
	}
	if err := c.validateMoE(bad); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers}, {"num_attention_heads", c.NumAttentionHeads},
		{"num_key_value_heads", c.NumKeyValueHeads}, {"head_dim", c.HeadDim},
	} {
		if f.v <= 0 {
			return bad(f.name, "must be a positive integer, got %d", f.v)
		}
	}
	if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		return bad("num_key_value_heads", "%d does not divide num_attention_heads %d", c.NumKeyValueHeads, c.NumAttentionHeads)
	}
	if c.HeadDim%2 != 0 {
		return bad("head_dim", "%d is odd; rotary embeddings need an even head dimension", c.HeadDim)
	}
	if c.HiddenAct != "silu" {
		return bad("hidden_act", "%q is not supported; Llama uses \"silu\"", c.HiddenAct)
	}
	if !(c.RMSNormEps > 0) {
		return bad("rms_norm_eps", "must be positive, got %g", c.RMSNormEps)
	}
	if !(c.RopeTheta > 0) {
		return bad("rope_theta", "must be positive, got %g", c.RopeTheta)
	}
	switch k := c.RopeScaling.Kind(); k {
	case "default":
	case "linear":
		if !(c.RopeScaling.Factor > 0) {
			return bad("rope_scaling.factor", "must be positive, got %g", c.RopeScaling.Factor)
		}
	case "llama3":
		r := c.RopeScaling
		if !(r.Factor > 0) || !(r.LowFreqFactor > 0) || !(r.HighFreqFactor > r.LowFreqFactor) || r.OriginalMaxPositionEmbeddings <= 0 {
			return bad("rope_scaling", "llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0, got %+v", *r)
		}
	default:
		return bad("rope_scaling.rope_type", "%q is not supported; hone implements \"linear\" and \"llama3\"", k)
	}
	return nil
}

// QDim is the width of the query projection output, KVDim of keys and values.
func (c *Config) QDim() int  { return c.NumAttentionHeads * c.HeadDim }
func (c *Config) KVDim() int { return c.NumKeyValueHeads * c.HeadDim }

// InvFreq returns the rotary inverse frequencies (head_dim/2 of them) after
// rope_scaling, computed in float64 as the HF rules state them.
func (c *Config) InvFreq() []float64 {
	half := c.HeadDim / 2
	inv := make([]float64, half)
	for i := range inv {
		inv[i] = 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(c.HeadDim))
	}
	switch c.RopeScaling.Kind() {
	case "linear":
		for i := range inv {
			inv[i] /= c.RopeScaling.Factor
		}
	case "llama3":
		r := c.RopeScaling
		orig := float64(r.OriginalMaxPositionEmbeddings)
		lowWave, highWave := orig/r.LowFreqFactor, orig/r.HighFreqFactor
		for i, f := range inv {
			wave := 2 * math.Pi / f
			switch {
			case wave < highWave:
			case wave > lowWave:
				inv[i] = f / r.Factor
			default:
				smooth := (orig/wave - r.LowFreqFactor) / (r.HighFreqFactor - r.LowFreqFactor)
				inv[i] = (1-smooth)*f/r.Factor + smooth*f
			}
		}
	}
	return inv
}

// NumParams counts the model's parameters (tied embeddings counted once).
func (c *Config) NumParams() int64 {
	var n int64
	for _, s := range c.ParamSpecs() {
		n += int64(s.Size())
	}
	return n
}
