package server_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"hone/catalog"
	"hone/client"
	"hone/export"
	"hone/internal/testmodel"
	"hone/store/storetest"
)

// A GGUF file under the data roots registered as a catalog version (POST
// /api/catalog/models/{name}/gguf) is answered at /v1/chat/completions
// from its quantized matrices, as the same weights dequantized to fp32
// answer; a file outside the roots is refused.
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
	file := filepath.Join(h.data, "bot-q8_0.gguf")
	if err := export.GGUF(ctx, src, file, export.GGUFOptions{DType: "q8_0"}); err != nil {
		t.Fatal(err)
	}
	// The quantized version through the API, from the data root; the
	// reference through the catalog, dequantized to fp32.
	if _, err := h.c.RegisterGGUF(ctx, "main.demo.botq", file); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "botf")
	if err := export.Unpack(ctx, file, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Register(ctx, catalog.Registration{Target: catalog.Name{Catalog: "main", Schema: "demo", Model: "botf"},
		SourceDir: dir, Move: true, Run: "test"}); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "bot.gguf")
	if err := os.Rename(file, outside); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.RegisterGGUF(ctx, "main.demo.botq", outside); client.StatusOf(err) != 400 && client.StatusOf(err) != 403 {
		t.Errorf("RegisterGGUF(a file outside the data roots) = %v, want refused", err)
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
