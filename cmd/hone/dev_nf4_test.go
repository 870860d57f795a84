package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"
)

// qloraCases are the committed QLoRA fixtures: a LoRA case's base
// quantized to NF4 (double-quantized scales, or fp32 scales; the layers'
// matrices, or with embeddings the token embeddings and output head too,
// tied or not), its dequantized weights as hone dev dequantize wrote them,
// and the float64 reference's gradients on those weights
// (tools/reference/qlora_reference.py).
var qloraCases = []struct {
	base, dir               string
	singleScale, embeddings bool
}{
	{"gqa_packed", "gqa_packed_nf4", false, false},
	{"tied_llama3_rslora", "tied_llama3_rslora_nf4_single", true, false},
	{"gqa_packed", "gqa_packed_nf4_embed", false, true},
	{"tied_llama3_rslora", "tied_llama3_rslora_nf4_single_embed", true, true},
}

func qloraFlags(singleScale, embeddings bool) []string {
	f := []string{"--quantize-base", "nf4"}
	if singleScale {
		f = append(f, "--nf4-single-scale")
	}
	if embeddings {
		f = append(f, "--nf4-embeddings")
	}
	return f
}

// `hone dev grad --adapter --quantize-base nf4` equals the float64
// reference run on the dequantized base within 1e-4: the per-layer
// dequantization inside the matrix products computes with exactly the
// weights dev dequantize writes.
func TestDevGradQLoRAMatchesReference(t *testing.T) {
	for _, c := range qloraCases {
		base := filepath.Join("..", "..", "engine", "testdata", "lora", c.base)
		dir := filepath.Join("..", "..", "engine", "testdata", "qlora", c.dir)
		args := append([]string{"--model", base, "--adapter", filepath.Join(base, "adapter"), "--batch", filepath.Join(base, "batch.json")}, qloraFlags(c.singleScale, c.embeddings)...)
		checkDevGrad(t, c.dir, dir, args...)
	}
}

// `hone dev dequantize` writes, bit for bit, the dequantized weights the
// reference fixtures were computed on (so a change to the quantizer shows
// here rather than as a parity failure), and they differ from the
// unquantized base (so the QLoRA parity is not the LoRA parity again).
func TestDevDequantizeMatchesFixture(t *testing.T) {
	for _, c := range qloraCases {
		base := filepath.Join("..", "..", "engine", "testdata", "lora", c.base)
		out := t.TempDir()
		cmd := devCmd()
		var stdout, stderr bytes.Buffer
		cmd.SetOut(&stdout)
		cmd.SetErr(&stderr)
		cmd.SetArgs(append([]string{"dequantize", "--model", base, "--out", out}, qloraFlags(c.singleScale, c.embeddings)...))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("%s: hone dev dequantize: %v\n%s", c.dir, err, stderr.String())
		}
		got := readAll(t, filepath.Join(out, "model.safetensors"))
		want := readAll(t, filepath.Join("..", "..", "engine", "testdata", "qlora", c.dir, "dequantized", "model.safetensors"))
		orig := readAll(t, filepath.Join(base, "model.safetensors"))
		if len(got) != len(want) {
			t.Fatalf("%s: %d tensors, fixture has %d", c.dir, len(got), len(want))
		}
		quantized := 0
		for k, w := range want {
			g := got[k]
			if len(g) != len(w) {
				t.Fatalf("%s: tensor %q missing or misshapen", c.dir, k)
			}
			changed := false
			for i := range w {
				if g[i] != w[i] {
					t.Fatalf("%s: %s[%d] = %v, fixture %v", c.dir, k, i, g[i], w[i])
				}
				changed = changed || w[i] != orig[k][i]
			}
			if changed {
				quantized++
			}
			if k == "model.embed_tokens.weight" && changed != c.embeddings {
				t.Errorf("%s: embeddings changed by dequantization: %v, want %v (--nf4-embeddings %v)", c.dir, changed, c.embeddings, c.embeddings)
			}
		}
		if quantized == 0 {
			t.Errorf("%s: the dequantized weights equal the unquantized base", c.dir)
		}
	}
}

// dev grad refuses a quantized base without an adapter: the base is frozen.
func TestDevGradQuantizeNeedsAdapter(t *testing.T) {
	base := filepath.Join("..", "..", "engine", "testdata", "lora", "gqa_packed")
	cmd := devCmd()
	var stdout, stderr bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"grad", "--model", base, "--batch", filepath.Join(base, "batch.json"), "--quantize-base", "nf4", "--out", filepath.Join(t.TempDir(), "g.safetensors")})
	if err := cmd.Execute(); err == nil {
		t.Fatal("dev grad --quantize-base without --adapter: no error")
	}
}

// hone create --quantize-base nf4 sends lora.quantize_base, alone if it is
// the only LoRA flag given.
func TestCreateSendsQuantizeBase(t *testing.T) {
	m := createBody(t, "--method", "lora", "--quantize-base", "nf4")
	l, _ := m["lora"].(map[string]any)
	got, _ := json.Marshal(l)
	if m["method"] != "lora" || string(got) != `{"quantize_base":"nf4"}` {
		t.Errorf("method %v, lora %s", m["method"], got)
	}
}
