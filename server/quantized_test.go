package server_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"hone/catalog"
	"hone/export"
	"hone/internal/testmodel"
	"hone/store/storetest"
)

// A catalog version registered from export.UnpackServable's directory is
// answered at /v1/chat/completions from its quantized GGUF, as the same
// weights dequantized to fp32 answer.
func TestChatServesQuantizedGGUF(t *testing.T) {
	st, _ := storetest.OpenSQLite(t)
	h := newHarness(t, st, harnessOpts{token: testToken})
	cat, err := catalog.New(catalog.Config{Store: st, Root: filepath.Join(h.home, "catalog")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "model")
	testmodel.Write(t, src, testmodel.Llama3Tiny, 4)
	file := filepath.Join(t.TempDir(), "bot-q8_0.gguf")
	if err := export.GGUF(ctx, src, file, export.GGUFOptions{DType: "q8_0"}); err != nil {
		t.Fatal(err)
	}
	for model, unpack := range map[string]func(context.Context, string, string) error{"botq": export.UnpackServable, "botf": export.Unpack} {
		dir := filepath.Join(t.TempDir(), model)
		if err := unpack(ctx, file, dir); err != nil {
			t.Fatal(err)
		}
		if _, err := cat.Register(ctx, catalog.Registration{Target: catalog.Name{Catalog: "main", Schema: "demo", Model: model},
			SourceDir: dir, Move: true, Run: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(model string) string {
		resp, b := post(t, h, "/v1/chat/completions", testToken,
			`{"model":"`+model+`","messages":[{"role":"user","content":"Hi there"}],"max_tokens":8,"temperature":0}`)
		var out struct {
			Model   string
			Choices []struct{ Message struct{ Content string } }
		}
		if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 || len(out.Choices) != 1 || out.Model != model {
			t.Fatalf("chat with %s = %d %s", model, resp.StatusCode, b)
		}
		return out.Choices[0].Message.Content
	}
	q, f := answer("main.demo.botq/1"), answer("main.demo.botf/1")
	if q != f || q == "" {
		t.Errorf("the quantized version answered %q, the dequantized fp32 one %q", q, f)
	}
}
