package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	parser "github.com/gpustack/gguf-parser-go"
	"github.com/spf13/cobra"

	"hone/engine"
	"hone/generate"
	"hone/internal/testmodel"
	"hone/serving"
	"hone/tokenizer"
)

// execute runs a command with args and returns its standard output.
func execute(t *testing.T, newCmd func() *cobra.Command, args ...string) (string, error) {
	t.Helper()
	cmd := newCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// A registered version is exported from the directory the server names
// for it; an alias picks its version.
func TestExportRegisteredVersion(t *testing.T) {
	root := t.TempDir()
	for _, v := range []string{"v1", "v2"} {
		testmodel.Write(t, filepath.Join(root, v), testmodel.Llama3Tiny, 1)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/catalog/models/main.demo.bot" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"name":"main.demo.bot","versions":[{"version":1,"storage_location":%q,"aliases":["champion"]},
			{"version":2,"storage_location":%q,"aliases":[]}]}`, filepath.Join(root, "v1"), filepath.Join(root, "v2"))
	}))
	defer srv.Close()
	for ref, want := range map[string]string{"main.demo.bot@champion": "v1", "main.demo.bot/2": "v2", "main.demo.bot": "v2"} {
		out := filepath.Join(t.TempDir(), "bot.gguf")
		if _, err := execute(t, exportCmd, "--server", srv.URL, "--model", ref, "--out", out, "--dtype", "f16"); err != nil {
			t.Fatalf("hone export --model %s: %v", ref, err)
		}
		f, err := parser.ParseGGUFFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if name, _ := f.Header.MetadataKV.Get("general.name"); name.ValueString() != want {
			t.Errorf("hone export --model %s exported %q, want %s", ref, name.ValueString(), want)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(out), "Modelfile")); err != nil {
			t.Errorf("no Modelfile beside the GGUF: %v", err)
		}
	}
	_, err := execute(t, exportCmd, "--server", srv.URL, "--model", "main.demo.bot/9", "--out", filepath.Join(t.TempDir(), "x.gguf"))
	if err == nil || !strings.Contains(err.Error(), "no such version") {
		t.Errorf("unknown version: err = %v", err)
	}
	hf := filepath.Join(t.TempDir(), "hf")
	if _, err := execute(t, exportCmd, "--model", filepath.Join(root, "v1"), "--format", "hf", "--out", hf); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(hf, "model.safetensors")); err != nil {
		t.Errorf("hf export: %v", err)
	}
}

// A Hugging Face id is found in the local Hugging Face cache.
func TestExportHFCacheID(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HF_HOME", home)
	repo := filepath.Join(home, "hub", "models--acme--tiny-llama")
	testmodel.Write(t, filepath.Join(repo, "snapshots", "abc123"), testmodel.Llama3Tiny, 1)
	if err := os.MkdirAll(filepath.Join(repo, "refs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte("abc123\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "tiny.gguf")
	if _, err := execute(t, exportCmd, "--model", "acme/tiny-llama", "--out", out); err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseGGUFFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if ft, _ := f.Header.MetadataKV.Get("general.file_type"); ft.ValueUint32() != 32 {
		t.Errorf("default dtype: general.file_type %d, want 32 (bf16)", ft.ValueUint32())
	}
	if _, err := execute(t, exportCmd, "--model", "acme/absent", "--out", out); err == nil || !strings.Contains(err.Error(), "not in the local Hugging Face cache") {
		t.Errorf("absent id: err = %v", err)
	}
}

// hone generate --json reports the ids the model completed and sampled.
func TestGenerateJSON(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	testmodel.Write(t, dir, testmodel.Llama3Tiny, 4)
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := engine.OpenDevice(engine.DefaultDevice, engine.DeviceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opt, err := serving.LoadOptions(dir) // as hone generate loads it
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(dir, dev, opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "chat"} {
		stdout, err := execute(t, generateCmd, "--model", dir, "--prompt", "Say hi", "--format", format, "--json", "--max-new-tokens", "6")
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Text           string `json:"text"`
			PromptTokenIDs []int  `json:"prompt_token_ids"`
			TokenIDs       []int  `json:"token_ids"`
			FinishReason   string `json:"finish_reason"`
		}
		if strings.Count(stdout, "\n") != 1 {
			t.Errorf("--json printed %q, want one line", stdout)
		}
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("--json output %q: %v", stdout, err)
		}
		wantPrompt := tok.Encode("Say hi", true) // text: no template, BOS added as the tokenizer adds it
		if format == "chat" {
			wantPrompt = tok.Encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nSay hi<|eot_id|>"+
				"<|start_header_id|>assistant<|end_header_id|>\n\n", false)
		}
		if !slices.Equal(got.PromptTokenIDs, wantPrompt) || got.PromptTokenIDs[0] != 128000 || got.PromptTokenIDs[1] == 128000 {
			t.Errorf("%s: prompt_token_ids = %v, want %v (one BOS first)", format, got.PromptTokenIDs, wantPrompt)
		}
		want, err := generate.Complete(context.Background(), m, wantPrompt, generate.Params{MaxNewTokens: 6, StopIDs: tok.Special().EOSIDs})
		if err != nil {
			t.Fatal(err)
		}
		wantFinish := "length"
		if slices.Contains(tok.Special().EOSIDs, want[len(want)-1]) {
			wantFinish = "stop"
		}
		if !slices.Equal(got.TokenIDs, want) || got.Text != tok.Decode(want, true) || got.FinishReason != wantFinish {
			t.Errorf("%s: got %+v, want token_ids %v, text %q, finish %s", format, got, want, tok.Decode(want, true), wantFinish)
		}
	}
}

// For a registered version, --json prints what /api/generate answered, and
// refuses an answer without token ids rather than printing empty lists.
func TestGenerateJSONRemote(t *testing.T) {
	var sent map[string]any
	answer := `{"model":"main.demo.bot/1","text":"Hi!","finish_reason":"stop","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},
		"prompt_token_ids":[128000,9906,0],"token_ids":[13347,128009]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewDecoder(r.Body).Decode(&sent)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, answer)
	}))
	defer srv.Close()
	stdout, err := execute(t, generateCmd, "--server", srv.URL, "--model", "main.demo.bot/1", "--prompt", "Hello!", "--format", "text", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"text":"Hi!","prompt_token_ids":[128000,9906,0],"token_ids":[13347,128009],"finish_reason":"stop"}` + "\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	if sent["prompt"] != "Hello!" || sent["messages"] != nil {
		t.Errorf("--format text sent %v, want the raw prompt and no messages", sent)
	}
	answer = `{"model":"main.demo.bot/1","text":"Hi!","finish_reason":"stop"}`
	if _, err := execute(t, generateCmd, "--server", srv.URL, "--model", "main.demo.bot/1", "--prompt", "Hello!", "--json"); err == nil {
		t.Error("an answer without token ids printed as --json")
	}
}
