package export_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/engine"
	"hone/export"
	"hone/generate"
	"hone/gguf"
	"hone/internal/testassets"
	"hone/internal/testmodel"
	"hone/tokenizer"
)

// quantTiny is small but has rows the k-quants take (hidden 256): eight
// layers, so the _M mixes give some layers' attn_v and ffn_down more bits,
// and an intermediate size (352) that is not a multiple of 256, so
// ffn_down falls back to llama.cpp's 32-element types (Q5_0, Q5_1, Q8_0).
const quantTiny = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 256,
	"intermediate_size": 352, "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
	"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 4096, "tie_word_embeddings": false,
	"bos_token_id": 1, "eos_token_id": 2}`

// wantMix is llama-quantize's type of each tensor of quantTiny per preset
// (from llama_tensor_get_type: use_more_bits picks layers 0, 3, 6 and 7 of
// 8; rows of 352 fall back).
func wantMix(dtype, name string) gguf.TensorType {
	layer, kind := -1, name
	fmt.Sscanf(name, "blk.%d.%s", &layer, &kind)
	more := layer == 0 || layer == 3 || layer == 6 || layer == 7
	if kind == "attn_norm.weight" || kind == "ffn_norm.weight" || kind == "output_norm.weight" {
		return gguf.F32
	}
	switch dtype {
	case "q8_0":
		return gguf.Q8_0
	case "q6_k":
		if kind == "ffn_down.weight" {
			return gguf.Q8_0
		}
		return gguf.Q6_K
	case "q4_0":
		if kind == "output.weight" {
			return gguf.Q6_K
		}
		return gguf.Q4_0
	}
	base, fall := gguf.Q4_K, gguf.Q5_0
	if dtype == "q5_k_m" {
		base, fall = gguf.Q5_K, gguf.Q5_1
	}
	switch kind {
	case "output.weight":
		return gguf.Q6_K
	case "attn_v.weight":
		if more {
			return gguf.Q6_K
		}
	case "ffn_down.weight":
		if more {
			return gguf.Q8_0 // Q6_K, falling back
		}
		return fall
	}
	return base
}

// TestQuantizedExportInLlamaCpp exports a model in every quantized preset
// and checks each file against llama.cpp: the per-tensor types of the mix,
// greedy agreement between llama.cpp decoding the file and hone decoding
// the same weights dequantized by hone's reader, and the KL divergence of
// llama.cpp's next-token distribution from the bf16 export's.
func TestQuantizedExportInLlamaCpp(t *testing.T) {
	if testing.Short() {
		t.Skip("exports six GGUF files and runs llama.cpp on each")
	}
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.WriteWith(t, dir, quantTiny, "tokenizer-llama2", 11)
	shapeForMargins(t, dir)
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Prompts: the held-out text's sentences. Some greedy paths meet a
	// near-tie (see nearTie); the others are compared token for token.
	var prompts [][]int
	for _, s := range strings.SplitAfter(heldOut, ".")[:8] {
		prompts = append(prompts, tok.Encode(strings.TrimSpace(s), true))
	}
	text := tok.Encode(heldOut, true)
	if len(text) < 250 {
		t.Fatalf("held-out text is %d tokens, want a few hundred", len(text))
	}
	text = text[:250]
	dtypes := []string{"bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"}
	files := make([]string, len(dtypes))
	for i, dt := range dtypes {
		files[i] = filepath.Join(t.TempDir(), dt+".gguf")
		if err := export.GGUF(context.Background(), dir, files[i], export.GGUFOptions{DType: dt}); err != nil {
			t.Fatalf("export %s: %v", dt, err)
		}
	}
	res := testassets.LlamaCppCompare(t, testassets.LlamaCppCompareRequest{Models: files, Prompts: prompts, MaxTokens: 32, Text: text})
	// Bounds on the mean KL (nats) from the bf16 export: about twice what
	// this model gives (q8_0 7e-5, q6_k 5e-4, q5_k_m 1.5e-3, q4_k_m 4.7e-3,
	// q4_0 7.7e-3). The model is synthetic, so the absolute values are not
	// a real model's; their ratios are in line with llama.cpp's own
	// measurements on Llama 3 8B (mean KLD roughly 0.001 for Q8_0 and 0.03
	// for Q4_K_M), and a quantizer that got a layout or scale wrong would
	// be off by orders of magnitude.
	bounds := map[string]float64{"q8_0": 2e-4, "q6_k": 1e-3, "q5_k_m": 3e-3, "q4_k_m": 1e-2, "q4_0": 1.5e-2}
	for i, dt := range dtypes {
		t.Run(dt, func(t *testing.T) {
			checkMix(t, files[i], dt)
			want, margins := honeGreedy(t, dir, files[i], prompts, tok.Special().EOSIDs)
			whole := 0
			for j := range prompts {
				got := res.Continuations[i][j]
				k := 0
				for k < min(len(got), len(want[j])) && got[k] == want[j][k] {
					k++
				}
				switch {
				case k == len(want[j]) && len(got) == k:
					whole++
				case k < len(want[j]) && margins[j][k] < nearTie:
					t.Logf("prompt %d: paths part at token %d, where hone's top two logits are %.4f apart (a near-tie)", j, k, margins[j][k])
				default:
					t.Errorf("prompt %d: llama.cpp continues %v, hone (dequantized weights) %v; they part at token %d, margin %.3f",
						j, got, want[j], k, margins[j][min(k, len(margins[j])-1)])
				}
			}
			if whole < len(prompts)/2 {
				t.Errorf("only %d of %d continuations free of near-ties", whole, len(prompts))
			}
			if dt != "bf16" && dt != "q4_0" { // files hone decodes from their quantized blocks
				// The same file decoded from its quantized matrices (the
				// integer kernels on 8-bit activations where the CPU has
				// them, as llama.cpp multiplies): the same agreement.
				quant, qm := honeGreedyQuantized(t, files[i], prompts, tok.Special().EOSIDs)
				qwhole := 0
				for j := range prompts {
					got, w := res.Continuations[i][j], quant[j]
					k := 0
					for k < min(len(got), len(w)) && got[k] == w[k] {
						k++
					}
					if k == len(w) && len(got) == k {
						qwhole++
					}
					if (k < len(w) || len(got) != k) && !(k < len(qm[j]) && qm[j][k] < nearTie) {
						t.Errorf("prompt %d: llama.cpp continues %v, hone's quantized decoding (%s kernels) %v; they part at token %d",
							j, got, gguf.DotKernels(), w, k)
					}
				}
				t.Logf("%s: continuations equal to llama.cpp's to the end: %d of %d decoding the dequantized weights, %d decoding the quantized blocks (%s kernels)",
					dt, whole, len(prompts), qwhole, gguf.DotKernels())
			}
			kl := res.KL[i]
			t.Logf("%s: mean KL %.5f, max %.4f, top-1 agreement %.3f over %d positions", dt, kl.Mean, kl.Max, kl.Top1Agree, kl.Positions)
			if b, ok := bounds[dt]; ok && !(kl.Mean <= b) {
				t.Errorf("%s: mean KL from bf16 %.5f, bound %g", dt, kl.Mean, b)
			}
		})
	}
	// More bits, less divergence.
	for i := 2; i < len(dtypes); i++ {
		if res.KL[i].Mean <= res.KL[i-1].Mean {
			t.Errorf("mean KL of %s (%.5f) not above %s's (%.5f)", dtypes[i], res.KL[i].Mean, dtypes[i-1], res.KL[i-1].Mean)
		}
	}
}

// checkMix compares the tensor types of a quantized export with
// llama-quantize's choice.
func checkMix(t *testing.T, path, dtype string) {
	if dtype == "bf16" {
		return
	}
	f, _ := readGGUF(t, path)
	for _, ti := range f.TensorInfos {
		if want := wantMix(dtype, ti.Name); uint32(ti.Type) != uint32(want) {
			t.Errorf("%s: %s is %v, llama-quantize would write %v", dtype, ti.Name, ti.Type, want)
		}
	}
}

// nearTie is the logit gap below which llama.cpp may pick the other token:
// it rounds activations to bf16 (bf16 files) or 8 bits (quantized ones)
// inside its matrix products, moving this model's logits by up to ~0.02.
const nearTie = 0.1

// honeGreedy decodes prompts greedily with hone's engine on the weights of
// the GGUF file at path, dequantized by hone's reader, and returns with
// each token the gap between the top two logits it was chosen by.
func honeGreedy(t *testing.T, src, path string, prompts [][]int, stop []int) (conts [][]int, margins [][]float32) {
	// The file carries the config and tokenizer it was exported with.
	dir := filepath.Join(t.TempDir(), "dequantized")
	if err := export.Unpack(context.Background(), path, dir); err != nil {
		t.Fatal(err)
	}
	c, err := engine.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		a, _ := os.ReadFile(filepath.Join(src, f))
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || string(a) != string(b) {
			t.Fatalf("unpacked %s differs from the source's (%v)", f, err)
		}
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(dir, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range prompts {
		got, err := generate.Complete(context.Background(), m, p, generate.Params{MaxNewTokens: 32, StopIDs: stop})
		if err != nil {
			t.Fatal(err)
		}
		conts = append(conts, got)
		seq := append(slices.Clone(p), got...)
		bt, err := engine.NewBatch([][]int{seq}, [][]int{seq}, nil, c.VocabSize)
		if err != nil {
			t.Fatal(err)
		}
		logits := m.Logits(bt)
		var gaps []float32
		for k := range got {
			row := logits[(len(p)-1+k)*c.VocabSize : (len(p)+k)*c.VocabSize]
			first, second := float32(math.Inf(-1)), float32(math.Inf(-1))
			for _, v := range row {
				if v > first {
					first, second = v, first
				} else if v > second {
					second = v
				}
			}
			gaps = append(gaps, first-second)
		}
		margins = append(margins, gaps)
	}
	return conts, margins
}

// honeGreedyQuantized decodes prompts greedily from the GGUF file's
// quantized matrices (export.LoadQuantized), as hone serves the file, and
// returns with each token the gap between the top two logits it was
// chosen by.
func honeGreedyQuantized(t *testing.T, path string, prompts [][]int, stop []int) (conts [][]int, margins [][]float32) {
	dir := filepath.Join(t.TempDir(), "unpacked")
	if err := export.Unpack(context.Background(), path, dir); err != nil {
		t.Fatal(err)
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, n, err := export.LoadQuantized(path, dir, dev, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if n == 0 {
		t.Fatalf("%s: no matrix decodes quantized", path)
	}
	for _, p := range prompts {
		got, err := generate.Complete(context.Background(), m, p, generate.Params{MaxNewTokens: 32, StopIDs: stop})
		if err != nil {
			t.Fatal(err)
		}
		conts = append(conts, got)
		// The top-two gap along this path, replayed step by step.
		d, err := m.NewDecoder(len(p) + len(got) + 1)
		if err != nil {
			t.Fatal(err)
		}
		var gaps []float32
		feed := p
		for k := range got {
			logits, err := d.Append(feed)
			if err != nil {
				t.Fatal(err)
			}
			gaps = append(gaps, topGap(logits))
			feed = got[k : k+1]
		}
		d.Close()
		margins = append(margins, gaps)
	}
	return conts, margins
}

// topGap is the gap between the two largest values of row.
func topGap(row []float32) float32 {
	first, second := float32(math.Inf(-1)), float32(math.Inf(-1))
	for _, v := range row {
		if v > first {
			first, second = v, first
		} else if v > second {
			second = v
		}
	}
	return first - second
}

// shapeForMargins makes the random model well conditioned, as a trained
// one is, so that greedy decoding is not at the mercy of near-ties and
// small weight changes move the next-token distribution a little, not
// chaotically: llama.cpp rounds activations to bf16 or 8 bits inside its
// bf16 and quantized matrix products (~1e-3 relative). The token
// embeddings are scaled up to dominate the residual stream (at init the
// layers' outputs outweigh them), and each output row u leans towards the
// embedding of token u-1, so the next token's logit stands out by a few
// nats while the layers still move the distribution.
func shapeForMargins(t *testing.T, dir string) {
	t.Helper()
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(dir, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	C := m.Config.HiddenSize
	params := engine.HostView(dev, m.Params.Arena)
	err = engine.FillDevice(dev, m.Params.Arena, func(host []float32) error {
		copy(host, params)
		w := engine.NewWeights(m.Config, host)
		V := len(w.Embed) / C
		for u := 0; u < V; u++ {
			prev := w.Embed[((u+V-1)%V)*C:]
			row := w.LMHead[u*C : (u+1)*C]
			for j := range row {
				row[j] = 3*row[j] + prev[j]
			}
		}
		for i := range w.Embed {
			w.Embed[i] *= 10
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m.ParamsChanged()
	if err := m.Save(dir, engine.SaveOptions{SourceDir: dir}); err != nil {
		t.Fatal(err)
	}
}

// heldOut is the text over whose positions the quantized exports'
// next-token distributions are compared with the bf16 export's.
const heldOut = `The lighthouse keeper kept a ledger of every ship that passed the point. In the spring of that year the
entries grew longer: fishing boats in the morning, a mail steamer at noon, and, twice a week, a grain barge that
rode so low in the water that its deck was awash whenever the wind came round to the west. He wrote down the name
of each vessel, the hour, the state of the sea, and anything odd he noticed, such as a flag flown upside down or a
lantern lit in daylight. His daughter, who was learning arithmetic, added up the columns on Sundays and worked out
how many ships had passed in a month, how many of them were steamers, and on which days the harbour had been
busiest. By midsummer she had noticed a pattern that her father had missed: the barges came exactly nine days
apart, unless a storm had closed the river mouth, in which case the next one arrived on the eleventh day and
the one after that on the sixteenth. When the harbour master heard of it he laughed, then checked his own books,
and stopped laughing. Numbers, the girl said, remember what people forget. The keeper framed that sentence and
hung it beside the barometer, where it stayed for forty years, long after the barges had given way to trains.`
