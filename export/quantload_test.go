package export_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/engine"
	"hone/export"
	"hone/gguf"
	"hone/internal/testmodel"
)

// Decoding from a GGUF file's Q8_0 and Q4_K matrices (the dequantize-and-
// dot kernels) gives the logits of decoding its dequantized fp32 weights,
// step by step, the permuted query and key rows included.
func TestLoadQuantizedDecodes(t *testing.T) {
	const cfg = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 256,
	"intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
	"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 256, "tie_word_embeddings": false,
	"bos_token_id": 1, "eos_token_id": 2}`
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.WriteWith(t, dir, cfg, "tokenizer-llama2", 3)
	sharpenAttention(t, dir)
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	def := gguf.DotKernels()
	for _, dt := range []string{"q8_0", "q4_k_m"} {
		file := filepath.Join(t.TempDir(), dt+".gguf")
		if err := export.GGUF(context.Background(), dir, file, export.GGUFOptions{DType: dt}); err != nil {
			t.Fatal(err)
		}
		unpacked := filepath.Join(t.TempDir(), "unpacked")
		if err := export.Unpack(context.Background(), file, unpacked); err != nil {
			t.Fatal(err)
		}
		ref, err := engine.Load(unpacked, dev, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		q, n, err := export.LoadQuantized(file, unpacked, dev, 2)
		if err != nil {
			t.Fatal(err)
		}
		// All 14 matrices, the output and the token embeddings (q4_k_m:
		// Q4_K, and Q6_K for the output and layer 1's attn_v and ffn_down).
		if want := 16; n != want {
			t.Errorf("%s: %d matrices decode quantized, want %d", dt, n, want)
		}
		// With the fp32-activation kernels the logits differ from the fp32
		// model's by summation order only (sharpened attention amplifies it
		// a little); with the integer kernels (8-bit activations, as
		// llama.cpp multiplies) by the activations' rounding too: the RMS
		// relative difference is 0.0105 (q8_0) and 0.020 (q4_k_m) at the
		// median step here, bound 0.03, and this model's sharpened
		// attention amplifies it at a near-tie (step 8: 0.086 and 0.32),
		// bound 0.5 on every step. A wrong block layout or scale gives
		// differences of order 1 at every step.
		check := func(kern string, bound, median float64) {
			prev, ok := gguf.SetDotKernels(kern)
			defer gguf.SetDotKernels(prev)
			if !ok {
				t.Fatalf("kernels %s not available", kern)
			}
			most, ds := 0.0, []float64{}
			dr, err := ref.NewDecoder(64)
			if err != nil {
				t.Fatal(err)
			}
			dq, err := q.NewDecoder(64)
			if err != nil {
				t.Fatal(err)
			}
			for step, id := range []int{1, 415, 4996, 17354, 1701, 29916, 975, 278, 17366, 11203} {
				a, err := dr.Append([]int{id})
				if err != nil {
					t.Fatal(err)
				}
				b, err := dq.Append([]int{id})
				if err != nil {
					t.Fatal(err)
				}
				d := relDiff(b, a)
				if d > bound {
					t.Fatalf("%s (%s): step %d: quantized decoding's logits differ from fp32's by %.3g, bound %g", dt, kern, step, d, bound)
				}
				most = max(most, d)
				ds = append(ds, d)
			}
			slices.Sort(ds)
			if md := ds[len(ds)/2]; md > median {
				t.Errorf("%s (%s): median step's logits differ from fp32's by %.3g, bound %g", dt, kern, md, median)
			}
			if most == 0 {
				t.Errorf("%s (%s): logits identical to fp32 decoding's to the bit: the quantized matrices were not used", dt, kern)
			}
			// A long prompt's prefill (past MatVec's 16 rows: the dequantized
			// bands and the device matmul) and the step after it.
			prompt := []int{1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889, 450, 11203, 338, 451, 17366, 29892, 541}
			dr.Close()
			dq.Close()
			if dr, err = ref.NewDecoder(64); err != nil {
				t.Fatal(err)
			}
			if dq, err = q.NewDecoder(64); err != nil {
				t.Fatal(err)
			}
			for step, ids := range [][]int{prompt, {263}} {
				a, err := dr.Append(ids)
				if err != nil {
					t.Fatal(err)
				}
				b, err := dq.Append(ids)
				if err != nil {
					t.Fatal(err)
				}
				if d := relDiff(b, a); d > bound {
					t.Fatalf("%s (%s): prefill step %d (%d tokens): quantized logits differ from fp32's by %.3g, bound %g", dt, kern, step, len(ids), d, bound)
				}
			}
			t.Logf("%s (%s): logits within %.3g of fp32 decoding's, median step %.3g", dt, kern, most, ds[len(ds)/2])
			dr.Close()
			dq.Close()
		}
		fp32 := "go"
		if _, ok := gguf.SetDotKernels("avx512"); ok {
			fp32 = "avx512"
		}
		gguf.SetDotKernels(def)
		check(fp32, 1e-4, 1e-4)
		if strings.HasPrefix(def, "int8") {
			check(def, 0.5, 0.03)
		}
		// The model holds the quantized matrices' blocks, not an fp32
		// copy: its weights are the fp32 norms plus the file's bytes of
		// each quantized tensor, the token embeddings included.
		kept := int64(4 * len(ref.Params.NormF))
		for _, p := range ref.Params.Layers {
			kept += int64(4 * (len(p.LN1) + len(p.LN2)))
		}
		want := kept
		g, err := gguf.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range g.Tensors {
			if len(ti.Shape) == 2 {
				want += int64(ti.Type.RowBytes(ti.Shape[1]) * ti.Shape[0])
			}
		}
		g.Close()
		held, full := q.HeldWeightBytes(), 4*int64(len(ref.Params.Arena))
		if held != want {
			t.Errorf("%s: the model holds %d bytes of weights, want %d (fp32 norms, quantized blocks)", dt, held, want)
		}
		// Beside the fp32 norms, the matrices (the embeddings included:
		// most of this small model, vocabulary 32000 by 256) take their
		// format's bits per weight: 8.5 of 32 for Q8_0, at most 6.56 (Q6_K)
		// in q4_k_m.
		bound := map[string]float64{"q8_0": 8.5 / 32, "q4_k_m": 6.5625 / 32}[dt]
		if r := float64(held-kept) / float64(full-kept); r > bound {
			t.Errorf("%s: the quantized matrices take %.3f of their fp32 size, want at most %.3f", dt, r, bound)
		}
		t.Logf("%s: %d bytes of weights held, %.2f of fp32's %d", dt, held, float64(held)/float64(full), full)
		ref.Close()
		q.Close()
	}
}
