package export_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	parser "github.com/gpustack/gguf-parser-go"

	"hone/engine"
	"hone/export"
	"hone/internal/testmodel"
	"hone/safetensors"
	"hone/tokenizer"
)

// readGGUF parses path with gpustack's gguf-parser-go, an implementation
// independent of hone's writer, and returns the file and its raw bytes.
func readGGUF(t *testing.T, path string) (*parser.GGUFFile, []byte) {
	t.Helper()
	f, err := parser.ParseGGUFFile(path)
	if err != nil {
		t.Fatalf("gguf-parser-go: %v", err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f, raw
}

func kv(t *testing.T, f *parser.GGUFFile, key string) parser.GGUFMetadataKV {
	t.Helper()
	v, ok := f.Header.MetadataKV.Get(key)
	if !ok {
		t.Fatalf("metadata key %q missing", key)
	}
	return v
}

// tensorFloats decodes a tensor's data from the file as float32.
func tensorFloats(t *testing.T, f *parser.GGUFFile, raw []byte, name string) ([]float32, parser.GGUFTensorInfo) {
	t.Helper()
	ti, ok := f.TensorInfos.Get(name)
	if !ok {
		t.Fatalf("tensor %q missing", name)
	}
	n := 1
	for _, d := range ti.Dimensions {
		n *= int(d)
	}
	start := f.TensorDataStartOffset + int64(ti.Offset)
	out := make([]float32, n)
	for i := range out {
		switch ti.Type {
		case parser.GGMLTypeF32:
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[start+4*int64(i):]))
		case parser.GGMLTypeF16:
			out[i] = safetensors.F16ToFloat32(binary.LittleEndian.Uint16(raw[start+2*int64(i):]))
		case parser.GGMLTypeBF16:
			out[i] = safetensors.BF16ToFloat32(binary.LittleEndian.Uint16(raw[start+2*int64(i):]))
		default:
			t.Fatalf("tensor %s: unexpected type %v", name, ti.Type)
		}
	}
	return out, ti
}

// hfRowsFor gives, for each GGUF row of a permuted Q or K projection, the
// HF row it holds: llama.cpp's converter computes
// w.reshape(heads, 2, head_dim/2, cols).swapaxes(1, 2), so GGUF row
// (h, i, j) — head h, pair i, member j — is HF row (h, j, i).
func hfRowsFor(rows, heads int) []int {
	hd := rows / heads
	out := make([]int, 0, rows)
	for h := 0; h < heads; h++ {
		for i := 0; i < hd/2; i++ {
			for j := 0; j < 2; j++ {
				out = append(out, h*hd+j*hd/2+i)
			}
		}
	}
	return out
}

func TestGGUFReadBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.Write(t, dir, llama3Scaled, 3)
	tc, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tcfg struct {
		ChatTemplate string `json:"chat_template"`
	}
	if err := json.Unmarshal(tc, &tcfg); err != nil {
		t.Fatal(err)
	}
	for _, dt := range []struct {
		name string
		typ  parser.GGMLType
		file uint32
		conv func(float32) float32
	}{
		{"f32", parser.GGMLTypeF32, 0, func(f float32) float32 { return f }},
		{"f16", parser.GGMLTypeF16, 1, func(f float32) float32 { return safetensors.F16ToFloat32(safetensors.Float32ToF16(f)) }},
		{"bf16", parser.GGMLTypeBF16, 32, func(f float32) float32 { return safetensors.BF16ToFloat32(safetensors.Float32ToBF16(f)) }},
	} {
		t.Run(dt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "bot.gguf")
			if err := export.GGUF(context.Background(), dir, out, export.GGUFOptions{DType: dt.name, Name: "bot"}); err != nil {
				t.Fatal(err)
			}
			f, raw := readGGUF(t, out)
			if f.Header.Version != parser.GGUFVersionV3 {
				t.Errorf("version %v, want 3", f.Header.Version)
			}
			wantKV := map[string]any{
				"general.architecture": "llama", "general.name": "bot", "general.file_type": dt.file,
				"llama.vocab_size": uint32(128256), "llama.context_length": uint32(4096), "llama.embedding_length": uint32(32),
				"llama.block_count": uint32(2), "llama.feed_forward_length": uint32(64), "llama.attention.head_count": uint32(4),
				"llama.attention.head_count_kv": uint32(2), "llama.attention.layer_norm_rms_epsilon": float32(1e-5),
				"llama.rope.freq_base": float32(500000), "llama.rope.dimension_count": uint32(8),
				"llama.attention.key_length": uint32(8), "llama.attention.value_length": uint32(8),
				"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "llama-bpe",
				"tokenizer.ggml.bos_token_id": uint32(128000), "tokenizer.ggml.eos_token_id": uint32(128009),
				"tokenizer.ggml.add_bos_token": true, "tokenizer.ggml.add_eos_token": false,
				"tokenizer.chat_template": tcfg.ChatTemplate,
				"general.type":            "model", "general.quantization_version": uint32(2),
			}
			for key, want := range wantKV {
				if got := kv(t, f, key).Value; got != want {
					t.Errorf("%s = %v (%T), want %v (%T)", key, got, got, want, want)
				}
			}
			// Every key is one of those or an array checked below.
			for _, m := range f.Header.MetadataKV {
				if _, ok := wantKV[m.Key]; !ok && !strings.HasPrefix(m.Key, "hone.file.") && !slices.Contains([]string{"tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"}, m.Key) {
					t.Errorf("unexpected key %s = %v", m.Key, m.Value)
				}
			}
			if _, ok := f.Header.MetadataKV.Get("llama.rope.scaling.type"); ok {
				t.Error("llama3 rope scaling written as rope.scaling.type: llama.cpp would scale twice")
			}
			checkGPT2Vocab(t, f, dir)
			checkTensors(t, f, raw, dir, dt.typ, dt.conv)
		})
	}
}

// checkGPT2Vocab compares the GGUF vocabulary with tokenizer.json.
func checkGPT2Vocab(t *testing.T, f *parser.GGUFFile, dir string) {
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	tokens := kv(t, f, "tokenizer.ggml.tokens").ValueArray().ValuesString()
	types := kv(t, f, "tokenizer.ggml.token_type").ValueArray().ValuesInt32()
	if len(tokens) != 128256 || len(types) != 128256 {
		t.Fatalf("%d tokens, %d types; want 128256", len(tokens), len(types))
	}
	for id, s := range tokens {
		if want, _ := tok.Token(id); s != want {
			t.Fatalf("token %d = %q, want %q", id, s, want)
		}
	}
	for id, want := range map[int]int32{0: 1, 9906: 1, 128000: 3, 128009: 3, 128255: 3} {
		if types[id] != want {
			t.Errorf("token_type[%d] (%q) = %d, want %d", id, tokens[id], types[id], want)
		}
	}
	var tj struct {
		Model struct {
			Merges []string `json:"merges"`
		} `json:"model"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err := json.Unmarshal(b, &tj); err != nil {
		t.Fatal(err)
	}
	if merges := kv(t, f, "tokenizer.ggml.merges").ValueArray().ValuesString(); !slices.Equal(merges, tj.Model.Merges) {
		t.Errorf("%d merges, tokenizer.json has %d (or they differ)", len(merges), len(tj.Model.Merges))
	}
}

// checkTensors compares every GGUF tensor with the source weights: names,
// shapes (ggml order), types, and values after the Q/K permutation.
func checkTensors(t *testing.T, f *parser.GGUFFile, raw []byte, dir string, matrix parser.GGMLType, conv func(float32) float32) {
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := engine.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
		"lm_head.weight": "output.weight"}
	for l := 0; l < 2; l++ {
		for hf, g := range map[string]string{"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
			"self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
			"mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"} {
			names[fmt.Sprintf("model.layers.%d.%s.weight", l, hf)] = fmt.Sprintf("blk.%d.%s.weight", l, g)
		}
	}
	if got, want := len(f.TensorInfos), len(names)+1; got != want {
		t.Errorf("%d tensors, want %d (the model's and rope_freqs)", got, want)
	}
	for hf, name := range names {
		info, _ := st.Info(hf)
		src := make([]float32, info.NumElements())
		if err := st.Float32(hf, src); err != nil {
			t.Fatal(err)
		}
		got, ti := tensorFloats(t, f, raw, name)
		wantType := matrix
		if len(info.Shape) == 1 {
			wantType = parser.GGMLTypeF32
		}
		if ti.Type != wantType {
			t.Errorf("%s: type %v, want %v", name, ti.Type, wantType)
		}
		if want := []uint64{uint64(info.Shape[len(info.Shape)-1]), uint64(info.Shape[0])}; len(info.Shape) == 2 && !slices.Equal(ti.Dimensions, want) {
			t.Errorf("%s: dimensions %v, want %v", name, ti.Dimensions, want)
		}
		cols := len(src) / info.Shape[0]
		rows := make([]int, info.Shape[0])
		for i := range rows {
			rows[i] = i
		}
		switch {
		case strings.Contains(hf, "q_proj"):
			rows = hfRowsFor(info.Shape[0], c.NumAttentionHeads)
		case strings.Contains(hf, "k_proj"):
			rows = hfRowsFor(info.Shape[0], c.NumKeyValueHeads)
		}
		if len(info.Shape) == 1 {
			rows, cols = []int{0}, len(src)
		}
		for r, hr := range rows {
			for j := 0; j < cols; j++ {
				want := src[hr*cols+j]
				if wantType != parser.GGMLTypeF32 {
					want = conv(want)
				}
				if g := got[r*cols+j]; g != want {
					t.Fatalf("%s[%d][%d] = %g, want %g (%s row %d)", name, r, j, g, want, hf, hr)
				}
			}
		}
	}
	// rope_freqs: llama.cpp divides each rotary frequency by its factor.
	got, _ := tensorFloats(t, f, raw, "rope_freqs.weight")
	inv := c.InvFreq()
	for i, fac := range got {
		base := math.Pow(500000, -float64(2*i)/8)
		if d := math.Abs(base/float64(fac)-inv[i]) / inv[i]; d > 1e-6 {
			t.Errorf("rope_freqs[%d] = %g: frequency %g, hone's is %g", i, fac, base/float64(fac), inv[i])
		}
	}
}

func TestGGUFSentencePieceVocab(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	writeLlama2Model(t, dir, 5)
	out := filepath.Join(t.TempDir(), "m.gguf")
	if err := export.GGUF(context.Background(), dir, out, export.GGUFOptions{}); err != nil {
		t.Fatal(err)
	}
	f, _ := readGGUF(t, out)
	for key, want := range map[string]any{
		"tokenizer.ggml.model": "llama", "general.file_type": uint32(32), "llama.attention.head_count_kv": uint32(4),
		"tokenizer.ggml.bos_token_id": uint32(1), "tokenizer.ggml.eos_token_id": uint32(2), "tokenizer.ggml.unknown_token_id": uint32(0),
		"tokenizer.ggml.add_bos_token": true, "llama.rope.freq_base": float32(10000), "tokenizer.ggml.add_space_prefix": true,
	} {
		if got := kv(t, f, key).Value; got != want {
			t.Errorf("%s = %v (%T), want %v (%T)", key, got, got, want, want)
		}
	}
	tokens := kv(t, f, "tokenizer.ggml.tokens").ValueArray().ValuesString()
	types := kv(t, f, "tokenizer.ggml.token_type").ValueArray().ValuesInt32()
	scores := kv(t, f, "tokenizer.ggml.scores").ValueArray().ValuesFloat32()
	if len(tokens) != 32000 || len(types) != 32000 || len(scores) != 32000 {
		t.Fatalf("%d tokens, %d types, %d scores; want 32000", len(tokens), len(types), len(scores))
	}
	for id, want := range map[int]int32{0: 2, 1: 3, 2: 3, 3: 6, 258: 6, 1000: 1} {
		if types[id] != want {
			t.Errorf("token_type[%d] (%q) = %d, want %d", id, tokens[id], types[id], want)
		}
	}
	if _, ok := f.Header.MetadataKV.Get("tokenizer.ggml.merges"); ok {
		t.Error("a SentencePiece vocabulary carries merges")
	}
	if _, ok := f.TensorInfos.Get("rope_freqs.weight"); ok {
		t.Error("rope_freqs written for a model without llama3 scaling")
	}
	if _, ok := f.Header.MetadataKV.Get("tokenizer.chat_template"); ok {
		t.Error("chat_template written for a model without one")
	}
}

func TestGGUFRefusesBadInput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.Write(t, dir, testmodel.Llama3Tiny, 1)
	out := filepath.Join(t.TempDir(), "m.gguf")
	if err := export.GGUF(context.Background(), dir, out, export.GGUFOptions{DType: "q4"}); !errors.Is(err, export.ErrInvalid) {
		t.Errorf("dtype q4: err = %v, want ErrInvalid", err)
	}
	// A checkpoint that lacks a tensor its config implies is refused by name
	// and leaves no file behind.
	st, err := safetensors.OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	var keep []safetensors.Tensor
	for _, info := range st.Tensors() {
		if info.Name == "model.layers.1.mlp.up_proj.weight" {
			continue
		}
		x := make([]float32, info.NumElements())
		if err := st.Float32(info.Name, x); err != nil {
			t.Fatal(err)
		}
		keep = append(keep, safetensors.Tensor{Name: info.Name, Shape: info.Shape, Data: x})
	}
	st.Close()
	if err := safetensors.WriteModel(dir, keep, safetensors.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = export.GGUF(context.Background(), dir, out, export.GGUFOptions{})
	if err == nil || !strings.Contains(err.Error(), "model.layers.1.mlp.up_proj.weight") {
		t.Errorf("missing tensor: err = %v, want it named", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed export left %s (%v)", out, err)
	}
}
