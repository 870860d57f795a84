package export_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/engine"
	"hone/export"
	"hone/generate"
	"hone/internal/testassets"
	"hone/tokenizer"
)

// writeAdapter saves a LoRA adapter on every linear module of the model
// in base, with random A and B (PEFT starts B at zero, which would leave
// the model unchanged), naming base as its base model.
func writeAdapter(t *testing.T, base, dir string) {
	t.Helper()
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(base, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := engine.NewAdapter(m.Config, dev, engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"all-linear"}, BaseModel: base})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	err = engine.FillDevice(dev, a.Params, func(host []float32) error {
		for i := range host {
			host[i] = 0.15 * float32(math.Sin(float64(3*i+1)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
}

// An adapter version (a PEFT directory naming its base) exports merged
// into its base: the GGUF file decodes in llama.cpp as hone decodes the
// merged weights, and its logits are base-with-adapter's, not the base's;
// the HF export holds the same merged model.
func TestExportAdapterMerged(t *testing.T) {
	base := filepath.Join(t.TempDir(), "base")
	writeLlama2Model(t, base, 21)
	sharpenAttention(t, base)
	adapter := filepath.Join(t.TempDir(), "adapter")
	writeAdapter(t, base, adapter)
	out := filepath.Join(t.TempDir(), "merged.gguf")
	if err := export.GGUF(context.Background(), adapter, out, export.GGUFOptions{DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	unpacked := filepath.Join(t.TempDir(), "unpacked")
	if err := export.Unpack(context.Background(), out, unpacked); err != nil {
		t.Fatal(err)
	}
	hf := filepath.Join(t.TempDir(), "hf")
	if err := export.HF(context.Background(), adapter, hf); err != nil {
		t.Fatal(err)
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	load := func(dir string) *engine.Model {
		m, err := engine.LoadWithAdapter(dir, dev, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tok, err := tokenizer.LoadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(spmTexts[0], true)
	bt, err := engine.NewBatch([][]int{ids}, [][]int{ids}, nil, 32000)
	if err != nil {
		t.Fatal(err)
	}
	attached, plain, merged, hfm := load(adapter).Logits(bt), load(base).Logits(bt), load(unpacked).Logits(bt), load(hf).Logits(bt)
	// The merge rounds W + scale·B·A to the base's bf16: far closer to the
	// attached adapter than the base without it is.
	dAttached, dBase := relDiff(merged, attached), relDiff(plain, attached)
	t.Logf("logits vs base+adapter: merged export %.3g, base alone %.3g", dAttached, dBase)
	if dAttached > 0.02 || dAttached > dBase/10 {
		t.Errorf("merged export's logits differ from base+adapter by %.3g (the base alone by %.3g)", dAttached, dBase)
	}
	if d := relDiff(hfm, merged); d > 1e-6 {
		t.Errorf("HF export's logits differ from the GGUF export's by %.3g", d)
	}
	var prompts [][]int
	for _, s := range spmTexts[:3] {
		prompts = append(prompts, tok.Encode(s, true))
	}
	res := testassets.LlamaCpp(t, testassets.LlamaCppRequest{Model: out, Prompts: prompts, MaxTokens: 12})
	m := load(unpacked)
	for i, p := range prompts {
		want, err := generate.Complete(context.Background(), m, p, generate.Params{MaxNewTokens: 12, StopIDs: tok.Special().EOSIDs})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Continuations[i], want) {
			t.Errorf("greedy continuation of %v: llama.cpp %v, hone %v", p, res.Continuations[i], want)
		}
	}
}

// relDiff is |a-b| / |b| over whole vectors.
func relDiff(a, b []float32) float64 {
	var num, den float64
	for i := range a {
		d := float64(a[i] - b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(num / den)
}

// --adapter-only: llama.cpp applies the GGUF LoRA adapter to the base GGUF
// written beside it and continues prompts greedily as hone does with the
// PEFT adapter attached to its base; the Modelfile names both.
func TestExportAdapterOnly(t *testing.T) {
	base := filepath.Join(t.TempDir(), "base")
	writeLlama2Model(t, base, 22)
	sharpenAttention(t, base)
	adapter := filepath.Join(t.TempDir(), "adapter")
	writeAdapter(t, base, adapter)
	outDir := t.TempDir()
	out := filepath.Join(outDir, "bot.gguf")
	if err := export.GGUFAdapter(context.Background(), adapter, out, export.GGUFOptions{DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	f, _ := readGGUF(t, out)
	for key, want := range map[string]any{"general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": float32(8)} {
		if got := kv(t, f, key).Value; got != want {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
	mf, err := os.ReadFile(filepath.Join(outDir, export.ModelfileName))
	if err != nil || !strings.Contains(string(mf), "FROM ./bot.base.gguf\nADAPTER ./bot.gguf\n") {
		t.Errorf("Modelfile %q (%v): want FROM the base and ADAPTER the adapter", mf, err)
	}
	tok, err := tokenizer.LoadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	var prompts [][]int
	for _, s := range spmTexts[:3] {
		prompts = append(prompts, tok.Encode(s, true))
	}
	baseFile := filepath.Join(outDir, "bot.base.gguf")
	res := testassets.LlamaCppCompare(t, testassets.LlamaCppCompareRequest{Models: []string{baseFile}, Prompts: prompts, MaxTokens: 12, Lora: out})
	plain := testassets.LlamaCppCompare(t, testassets.LlamaCppCompareRequest{Models: []string{baseFile}, Prompts: prompts, MaxTokens: 12})
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.LoadWithAdapter(adapter, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	differ := false
	for i, p := range prompts {
		want, err := generate.Complete(context.Background(), m, p, generate.Params{MaxNewTokens: 12, StopIDs: tok.Special().EOSIDs})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Continuations[0][i]; !slices.Equal(got, want) {
			t.Errorf("greedy continuation of %v: llama.cpp with the adapter %v, hone %v", p, got, want)
		}
		differ = differ || !slices.Equal(plain.Continuations[0][i], want)
	}
	if !differ {
		t.Error("the adapter changes no continuation: the check cannot tell whether llama.cpp applied it")
	}
}
