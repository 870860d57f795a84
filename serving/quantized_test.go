package serving_test

import (
	"context"
	"path/filepath"
	"testing"

	"hone/chattemplate"
	"hone/engine"
	"hone/export"
	"hone/internal/testmodel"
	"hone/serving"
)

// A model directory holding a quantized GGUF (export.UnpackServable) is
// served from the file's quantized matrices, without an fp32 copy of
// them, and answers as the dequantized fp32 model does.
func TestServesQuantizedGGUF(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "model")
	testmodel.Write(t, src, testmodel.Llama3Tiny, 1)
	file := filepath.Join(t.TempDir(), "bot-q8_0.gguf")
	if err := export.GGUF(ctx, src, file, export.GGUFOptions{DType: "q8_0"}); err != nil {
		t.Fatal(err)
	}
	qdir, fdir := filepath.Join(t.TempDir(), "q"), filepath.Join(t.TempDir(), "f")
	if err := export.UnpackServable(ctx, file, qdir); err != nil {
		t.Fatal(err)
	}
	if err := export.Unpack(ctx, file, fdir); err != nil { // the same weights, dequantized
		t.Fatal(err)
	}
	var held, full, kept int64
	s, err := serving.New(serving.Config{Unload: func(dir string, m *engine.Model) {
		if dir == qdir {
			c := m.Config
			held, full = m.HeldWeightBytes(), 4*c.NumParams()
			kept = 4 * int64(c.VocabSize*c.HiddenSize+(2*c.NumHiddenLayers+1)*c.HiddenSize) // embeddings, norms
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	req := serving.Request{Messages: []chattemplate.Message{{Role: "user", Content: "What is 12 + 30?"}}, MaxTokens: 10, Temperature: ptr(0.0)}
	q, err := s.Generate(ctx, qdir, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Generate(ctx, fdir, req, nil) // evicts qdir (one model loaded)
	if err != nil {
		t.Fatal(err)
	}
	if q.Text != f.Text || q.CompletionTokens == 0 {
		t.Errorf("quantized model answered %q (%d tokens), the dequantized fp32 model %q", q.Text, q.CompletionTokens, f.Text)
	}
	// The tied embeddings and the norms stay fp32 (nearly all of this tiny
	// model); the layer matrices are held in Q8_0, 8.5 bits a weight.
	if held == 0 || float64(held-kept) > float64(full-kept)*8.5/32 {
		t.Errorf("the served model holds %d bytes of weights (%d beside the embeddings and norms); fp32 would be %d (%d): not served from the quantized matrices",
			held, held-kept, full, full-kept)
	}
}
