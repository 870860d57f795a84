package export

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"hone/chattemplate"
	"hone/engine"
	"hone/gguf"
)

// GGUFOptions control a GGUF export.
type GGUFOptions struct {
	// DType of the matrices: "f32", "f16", "bf16" (default), or a
	// quantized preset, "q8_0", "q4_0", "q4_k_m", "q5_k_m" or "q6_k"
	// (llama.cpp's per-tensor mix; see typeMixer). Norms and other 1-D
	// tensors stay f32, as llama.cpp expects.
	DType string
	// Name is general.name; default the source directory's name.
	Name string
}

// GGUF writes the model in dir (or, for a PEFT adapter directory, the
// adapter merged into its base) as a llama-architecture GGUF file at out:
// the hyperparameters, the tokenizer, special-token ids, the chat template,
// and the tensors under llama.cpp's names with the Q/K row order its rotary
// embedding expects.
func GGUF(ctx context.Context, dir, out string, opt GGUFOptions) error {
	if opt.DType == "" {
		opt.DType = "bf16"
	}
	ft, ok := presets[opt.DType]
	if !ok {
		return fmt.Errorf("%w: dtype %q: want %s", ErrInvalid, opt.DType, DTypes)
	}
	if opt.Name == "" {
		opt.Name = filepath.Base(filepath.Clean(dir))
	}
	// The README's `--out bot/bot.gguf`: the file's folder (with its
	// Modelfile) need not exist yet.
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	dir, cleanup, err := mergedSource(dir, out)
	if err != nil {
		return err
	}
	defer cleanup()
	src, err := openSource(dir)
	if err != nil {
		return err
	}
	defer src.Close()
	arch := "llama"
	if src.cfg.IsDBRX() {
		if err := dbrxExportable(src.cfg); err != nil {
			return err
		}
		arch = "dbrx"
	}
	voc, err := loadVocab(dir, src.tok, src.cfg.VocabSize)
	if err != nil {
		return err
	}
	w := gguf.NewWriter()
	w.String("general.architecture", arch)
	w.String("general.type", "model")
	w.String("general.name", opt.Name)
	w.Uint32("general.file_type", ft.file)
	w.Uint32("general.quantization_version", 2)
	if arch == "dbrx" {
		writeDBRXHyperparameters(w, src.cfg)
	} else {
		writeHyperparameters(w, src.cfg)
	}
	if err := writeTokenizer(w, src, voc); err != nil {
		return err
	}
	if err := writeHoneFiles(w, dir); err != nil {
		return err
	}
	tensors := src.tensors
	if arch == "dbrx" {
		tensors = src.dbrxTensors
	}
	tied := true
	for _, p := range src.cfg.ParamSpecs() {
		tied = tied && p.Name != "lm_head.weight"
	}
	mix := newTypeMixer(opt.DType, src.cfg, arch, tied)
	for _, t := range tensors(ctx, mix) {
		w.AddTensor(t)
	}
	if mix.err != nil {
		return fmt.Errorf("export %s as %s: %w", dir, opt.DType, mix.err)
	}
	if err := w.WriteFile(out); err != nil {
		return fmt.Errorf("export %s: %w", dir, err)
	}
	return writeModelfile(src, out)
}

func writeHyperparameters(w *gguf.Writer, c *engine.Config) {
	w.Uint32("llama.vocab_size", uint32(c.VocabSize))
	w.Uint32("llama.context_length", uint32(c.MaxPositionEmbeddings))
	w.Uint32("llama.embedding_length", uint32(c.HiddenSize))
	w.Uint32("llama.block_count", uint32(c.NumHiddenLayers))
	w.Uint32("llama.feed_forward_length", uint32(c.IntermediateSize))
	w.Uint32("llama.attention.head_count", uint32(c.NumAttentionHeads))
	w.Uint32("llama.attention.head_count_kv", uint32(c.NumKeyValueHeads))
	w.Uint32("llama.attention.key_length", uint32(c.HeadDim))
	w.Uint32("llama.attention.value_length", uint32(c.HeadDim))
	w.Float32("llama.attention.layer_norm_rms_epsilon", float32(c.RMSNormEps))
	w.Float32("llama.rope.freq_base", float32(c.RopeTheta))
	w.Uint32("llama.rope.dimension_count", uint32(c.HeadDim))
	// llama3 scaling travels as the rope_freqs tensor (see tensors):
	// llama.cpp has no scaling type for it, and "linear" would scale twice.
	if c.RopeScaling.Kind() == "linear" {
		w.String("llama.rope.scaling.type", "linear")
		w.Float32("llama.rope.scaling.factor", float32(c.RopeScaling.Factor))
	}
	if c.MoE() { // Mixtral: llama.cpp's llama architecture with experts
		w.Uint32("llama.expert_count", uint32(c.NumLocalExperts))
		w.Uint32("llama.expert_used_count", uint32(c.NumExpertsPerTok))
	}
}

func writeTokenizer(w *gguf.Writer, src *source, v *vocab) error {
	w.String("tokenizer.ggml.model", v.model)
	w.String("tokenizer.ggml.pre", v.pre)
	w.Strings("tokenizer.ggml.tokens", v.tokens)
	if v.scores != nil {
		w.Float32s("tokenizer.ggml.scores", v.scores)
	}
	w.Int32s("tokenizer.ggml.token_type", v.types)
	if v.merges != nil {
		w.Strings("tokenizer.ggml.merges", v.merges)
	}
	sp := src.tok.Special()
	for _, id := range []struct {
		key string
		id  int
	}{{"bos_token_id", sp.BOS}, {"eos_token_id", sp.EOS}, {"unknown_token_id", v.unk}, {"padding_token_id", sp.PAD}} {
		if id.id >= 0 {
			w.Uint32("tokenizer.ggml."+id.key, uint32(id.id))
		}
	}
	w.Bool("tokenizer.ggml.add_bos_token", sp.AddBOS)
	if v.model == "llama" {
		// SentencePiece vocabularies differ in whether a word-start marker
		// is prepended to the text; llama.cpp assumes it is unless told.
		ids := src.tok.Encode("a", false)
		first, _ := src.tok.Token(ids[0])
		w.Bool("tokenizer.ggml.add_space_prefix", strings.HasPrefix(first, "▁"))
	}
	probe := src.tok.Encode("a", true)
	w.Bool("tokenizer.ggml.add_eos_token", sp.EOS >= 0 && probe[len(probe)-1] == sp.EOS)
	tmpl, err := chattemplate.FromModelDir(src.dir)
	switch {
	case err == nil:
		w.String("tokenizer.chat_template", tmpl.Source())
	case !errors.Is(err, chattemplate.ErrNoTemplate):
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// ggufName maps an HF Llama tensor name to llama.cpp's.
func ggufName(hf string) string {
	switch hf {
	case "model.embed_tokens.weight":
		return "token_embd.weight"
	case "model.norm.weight":
		return "output_norm.weight"
	case "lm_head.weight":
		return "output.weight"
	}
	rest := strings.TrimPrefix(hf, "model.layers.")
	layer, rest, _ := strings.Cut(rest, ".")
	for _, r := range [][2]string{
		{"input_layernorm.", "attn_norm."}, {"self_attn.q_proj.", "attn_q."}, {"self_attn.k_proj.", "attn_k."},
		{"self_attn.v_proj.", "attn_v."}, {"self_attn.o_proj.", "attn_output."}, {"post_attention_layernorm.", "ffn_norm."},
		{"mlp.gate_proj.", "ffn_gate."}, {"mlp.up_proj.", "ffn_up."}, {"mlp.down_proj.", "ffn_down."},
		{"block_sparse_moe.gate.", "ffn_gate_inp."},
	} {
		if s, ok := strings.CutPrefix(rest, r[0]); ok {
			return "blk." + layer + "." + r[1] + s
		}
	}
	return "" // ParamSpecs names only the tensors above
}

// tensors lists the GGUF tensors: the model's parameters in arena order,
// then rope_freqs for llama3 rope scaling.
func (s *source) tensors(ctx context.Context, mix *typeMixer) []gguf.Tensor {
	c := s.cfg
	var out []gguf.Tensor
	for _, p := range c.ParamSpecs() {
		if strings.Contains(p.Name, ".block_sparse_moe.experts.") {
			if t, ok := s.stackedExperts(ctx, p, mix); ok {
				out = append(out, t)
			}
			continue
		}
		name := ggufName(p.Name)
		typ := mix.pick(name, p.Shape)
		heads := 0
		switch {
		case strings.Contains(p.Name, ".q_proj."):
			heads = c.NumAttentionHeads
		case strings.Contains(p.Name, ".k_proj."):
			heads = c.NumKeyValueHeads
		}
		out = append(out, gguf.Tensor{Name: name, Shape: p.Shape, Type: typ, Fill: func(dst []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			x := make([]float32, p.Size())
			if err := s.st.Float32(p.Name, x); err != nil {
				return err
			}
			if heads > 0 {
				x = PermuteQK(x, heads, len(x)/p.Shape[0])
			}
			gguf.Quantize(typ, dst, x, p.Shape[len(p.Shape)-1])
			return nil
		}})
	}
	if c.RopeScaling.Kind() == "llama3" {
		f := RopeFactors(c)
		out = append(out, gguf.Tensor{Name: "rope_freqs.weight", Shape: []int{len(f)}, Type: gguf.F32,
			Fill: func(dst []byte) error { gguf.QuantizeRow(gguf.F32, dst, f); return nil }})
	}
	return out
}

// expertNames maps a Mixtral expert matrix to llama.cpp's stacked tensor.
var expertNames = map[string]string{"w1.weight": "ffn_gate_exps.weight", "w3.weight": "ffn_up_exps.weight", "w2.weight": "ffn_down_exps.weight"}

// stackedExperts is, for expert 0's w1, w2 or w3 of a layer, llama.cpp's
// tensor of that matrix of every expert stacked (E, rows, cols), as its
// converter writes Mixtral; other experts' matrices are inside it (false).
func (s *source) stackedExperts(ctx context.Context, p engine.ParamSpec, mix *typeMixer) (gguf.Tensor, bool) {
	rest := strings.TrimPrefix(p.Name, "model.layers.")
	layer, rest, _ := strings.Cut(rest, ".block_sparse_moe.experts.")
	expert, mat, _ := strings.Cut(rest, ".")
	if expert != "0" {
		return gguf.Tensor{}, false
	}
	E := s.cfg.NumLocalExperts
	name, shape := "blk."+layer+"."+expertNames[mat], append([]int{E}, p.Shape...)
	typ := mix.pick(name, shape)
	return gguf.Tensor{Name: name, Shape: shape, Type: typ,
		Fill: func(dst []byte) error {
			x := make([]float32, p.Size())
			width := len(dst) / E
			for e := 0; e < E; e++ {
				if err := ctx.Err(); err != nil {
					return err
				}
				name := fmt.Sprintf("model.layers.%s.block_sparse_moe.experts.%d.%s", layer, e, mat)
				if err := s.st.Float32(name, x); err != nil {
					return err
				}
				gguf.Quantize(typ, dst[e*width:(e+1)*width], x, p.Shape[len(p.Shape)-1])
			}
			return nil
		}}, true
}

// PermuteQK reorders the rows of a query or key projection (heads blocks
// of head_dim rows, cols columns each) from HF's rotate-half layout, where
// row i of a head pairs with row i+head_dim/2, to the interleaved layout of
// llama.cpp's rotary embedding, where rows 2i and 2i+1 pair: row 2i+j of
// each head is HF's row j*head_dim/2+i (j = 0, 1). llama.cpp's converter
// applies the same permutation to Llama checkpoints.
func PermuteQK(x []float32, heads, cols int) []float32 {
	out := make([]float32, len(x))
	hd := len(x) / cols / heads
	half := hd / 2
	for h := 0; h < heads; h++ {
		for i := 0; i < half; i++ {
			for j := 0; j < 2; j++ {
				dst := (h*hd + 2*i + j) * cols
				src := (h*hd + j*half + i) * cols
				copy(out[dst:dst+cols], x[src:src+cols])
			}
		}
	}
	return out
}

// RopeFactors are llama.cpp's rope_freqs for llama3 scaling: each rotary
// frequency's divisor, the unscaled frequency over hone's scaled one.
func RopeFactors(c *engine.Config) []float32 {
	scaled := c.InvFreq()
	out := make([]float32, len(scaled))
	for i, f := range scaled {
		base := 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(c.HeadDim))
		out[i] = float32(base / f)
	}
	return out
}
