package export_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"hone/engine"
	"hone/export"
	"hone/generate"
	"hone/internal/testassets"
	"hone/internal/testmodel"
	"hone/tokenizer"
)

// TestLlamaCppLoadsExport loads hone's GGUF export in llama.cpp itself and
// checks that llama.cpp tokenizes as hone does and continues prompts
// greedily with the same tokens as hone's engine.
func TestLlamaCppLoadsExport(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		texts        []string
	}{
		{"llama3", llama3Scaled, llama3Texts},
		{"llama3-biases-tied", biasTiny, llama3Texts},
		{"llama2-sentencepiece", llama2Tiny, spmTexts},
		{"mixtral", mixtralTiny, spmTexts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "model")
			switch tc.config {
			case llama2Tiny:
				writeLlama2Model(t, dir, 7)
			case mixtralTiny:
				testmodel.WriteWith(t, dir, tc.config, "tokenizer-llama2", 7)
			default:
				testmodel.Write(t, dir, tc.config, 7)
			}
			sharpenAttention(t, dir)
			out := filepath.Join(t.TempDir(), "model.gguf")
			if err := export.GGUF(context.Background(), dir, out, export.GGUFOptions{DType: "f32"}); err != nil {
				t.Fatal(err)
			}
			tok, err := tokenizer.LoadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var prompts [][]int
			for _, s := range tc.texts[:3] {
				prompts = append(prompts, tok.Encode(s, true))
			}
			res := testassets.LlamaCpp(t, testassets.LlamaCppRequest{Model: out, Texts: tc.texts, Prompts: prompts, MaxTokens: 12})
			for i, s := range tc.texts {
				if want := tok.Encode(s, true); !slices.Equal(res.Tokens[i], want) {
					t.Errorf("llama.cpp tokenizes %q as %v, hone as %v", s, res.Tokens[i], want)
				}
			}
			// The reduced-precision exports load too and carry the same vocabulary.
			for _, dt := range []string{"bf16", "f16"} {
				half := filepath.Join(t.TempDir(), dt+".gguf")
				if err := export.GGUF(context.Background(), dir, half, export.GGUFOptions{DType: dt}); err != nil {
					t.Fatal(err)
				}
				r := testassets.LlamaCpp(t, testassets.LlamaCppRequest{Model: half, Texts: tc.texts[:1], Prompts: prompts[:1], MaxTokens: 2})
				if !slices.Equal(r.Tokens[0], res.Tokens[0]) || len(r.Continuations[0]) != 2 {
					t.Errorf("%s export: tokens %v (f32: %v), continuation %v", dt, r.Tokens[0], res.Tokens[0], r.Continuations[0])
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
			stop := tok.Special().EOSIDs
			for i, p := range prompts {
				want, err := generate.Complete(context.Background(), m, p, generate.Params{MaxNewTokens: 12, StopIDs: stop})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(res.Continuations[i], want) {
					t.Errorf("greedy continuation of %v: llama.cpp %v, hone %v", p, res.Continuations[i], want)
				}
			}
		})
	}
}
