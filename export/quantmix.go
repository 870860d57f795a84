package export

import (
	"fmt"
	"strconv"
	"strings"

	"hone/engine"
	"hone/gguf"
)

// preset is a GGUF --dtype: the type of most matrices and llama.cpp's
// general.file_type (its llama_ftype) for it.
type preset struct {
	base gguf.TensorType
	file uint32
}

// presets are the dtypes GGUF accepts. q4_k_m and q5_k_m are llama.cpp's
// "_M" mixes: mostly Q4_K (Q5_K) with some tensors kept at higher
// precision, chosen per tensor by typeMixer as llama-quantize does.
var presets = map[string]preset{
	"f32": {gguf.F32, 0}, "f16": {gguf.F16, 1}, "bf16": {gguf.BF16, 32},
	"q4_0": {gguf.Q4_0, 2}, "q8_0": {gguf.Q8_0, 7},
	"q4_k_m": {gguf.Q4_K, 15}, "q5_k_m": {gguf.Q5_K, 17}, "q6_k": {gguf.Q6_K, 18},
}

// DTypes lists the accepted GGUF dtypes, for help and error messages.
const DTypes = "f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m or q6_k"

// typeMixer picks each tensor's type the way llama.cpp's llama-quantize
// does (llama_tensor_get_type in llama-quant.cpp) for the presets hone
// writes. It must see the tensors in file order: like llama-quantize it
// counts the attn_v and ffn_down tensors it has seen to know their layer.
type typeMixer struct {
	dtype   string
	p       preset
	layers  int
	experts int
	is70B   bool
	tied    bool // no output.weight: token_embd is the output matrix too
	iAttnV  int
	iDown   int
	err     error // the first typeFor error of pick
}

// pick is typeFor, remembering the first error in m.err.
func (m *typeMixer) pick(name string, shape []int) gguf.TensorType {
	t, err := m.typeFor(name, shape)
	if err != nil && m.err == nil {
		m.err = err
	}
	return t
}

func newTypeMixer(dtype string, c *engine.Config, arch string, tied bool) *typeMixer {
	return &typeMixer{dtype: dtype, p: presets[dtype], layers: c.NumHiddenLayers, experts: c.NumLocalExperts,
		// llama.cpp calls a llama with 80 layers 70B and gives its attn_v more bits.
		is70B: arch == "llama" && c.NumHiddenLayers == 80, tied: tied}
}

// useMoreBits is llama.cpp's choice of layers that get more bits in the _M
// mixes: the first and last eighth and every third layer in between.
func useMoreBits(i, n int) bool { return i < n/8 || i >= 7*n/8 || (i-n/8)%3 == 2 }

// typeFor is the type of tensor name with shape (row-major; rows are the
// last dimension). 1-D tensors, norms and the MoE router are never
// quantized (the router keeps the half-precision type of a bf16 export).
func (m *typeMixer) typeFor(name string, shape []int) (gguf.TensorType, error) {
	if len(shape) == 1 || strings.HasSuffix(name, "_norm.weight") {
		return gguf.F32, nil
	}
	if !m.p.base.Quantized() {
		return m.p.base, nil
	}
	if strings.Contains(name, "ffn_gate_inp.weight") {
		return gguf.BF16, nil
	}
	cols := shape[len(shape)-1]
	t := m.p.base
	mixM := m.dtype == "q4_k_m" || m.dtype == "q5_k_m"
	switch {
	case name == "output.weight" || (m.tied && name == "token_embd.weight"):
		switch {
		case cols%m.p.base.BlockSize() != 0:
			t = gguf.Q8_0
		case t != gguf.Q8_0:
			t = gguf.Q6_K
		}
	case name == "token_embd.weight":
	case strings.Contains(name, "attn_v.weight") || strings.Contains(name, "attn_qkv.weight"):
		if mixM && useMoreBits(m.iAttnV, m.layers) {
			t = gguf.Q6_K
		}
		if m.is70B && t == gguf.Q4_K {
			t = gguf.Q5_K
		}
		if m.experts == 8 {
			t = gguf.Q8_0
		}
		m.iAttnV++
	case strings.Contains(name, "attn_k.weight"):
		if m.experts == 8 {
			t = gguf.Q8_0
		}
	case strings.Contains(name, "ffn_down"):
		layer := m.iDown
		if m.experts > 1 { // experts' tensors: the layer is in the name
			layer, _ = strconv.Atoi(strings.Split(name, ".")[1])
		}
		if mixM && useMoreBits(layer, m.layers) {
			t = gguf.Q6_K
		}
		m.iDown++
	case strings.Contains(name, "attn_output.weight"):
		if m.experts == 8 && m.dtype == "q4_k_m" {
			t = gguf.Q5_K
		}
	}
	if cols%t.BlockSize() == 0 {
		return t, nil
	}
	// llama.cpp's fallback for rows that are not whole blocks.
	fallback := map[gguf.TensorType]gguf.TensorType{gguf.Q4_K: gguf.Q5_0, gguf.Q5_K: gguf.Q5_1, gguf.Q6_K: gguf.Q8_0}[t]
	if fallback == 0 {
		return 0, fmt.Errorf("%w: tensor %s has rows of %d elements, not a multiple of %v's block of %d; export it as f16, bf16 or f32",
			ErrInvalid, name, cols, t, t.BlockSize())
	}
	if cols%fallback.BlockSize() != 0 {
		return gguf.F16, nil // as llama.cpp does for rows not a multiple of 32
	}
	return fallback, nil
}
