package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hone/client"
	"hone/internal/testassets"
	"hone/internal/testmodel"
)

const chromium = "/usr/bin/chromium"

// TestBrowser drives the UI of a real `hone serve` (real training, real
// serving) in headless Chromium with testdata/browser.mjs: token prompt,
// keyboard navigation, a live run cancelled and resumed, catalog and
// schema creation, the create form's data report (refused, then good),
// a run watched to completion with its curves, the registered version and
// an alias, a streamed chat, a comparison, a 2×2 sweep's grid with its
// best run marked, and every page at 1280x800 and
// 390 pixels wide without horizontal scrolling and without a console error.
// Screenshots land in $HONE_UI_SCREENSHOTS (default ui/testdata/screenshots).
func TestBrowser(t *testing.T) {
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must run the browser tests: %s is missing (scripts/install-deps.sh installs it): %v", chromium, err)
		}
		t.Skipf("browser test skipped: %s is not installed (scripts/install-deps.sh installs Debian's chromium)", chromium)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required (scripts/install-deps.sh installs it): %v", err)
	}
	playwright := testassets.Path(t, "playwright-core/package")
	root := testassets.Root(t)
	shots := os.Getenv("HONE_UI_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(root, "ui", "testdata", "screenshots")
	}
	if abs, err := filepath.Abs(shots); err == nil {
		shots = abs
	}

	home := t.TempDir()
	data := filepath.Join(home, "data")
	model := filepath.Join(data, "tiny-llama")
	testmodel.Write(t, model, `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 16,
		"intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
		"rms_norm_eps": 1e-5, "rope_theta": 500000, "max_position_embeddings": 2048, "tie_word_embeddings": true,
		"bos_token_id": 128000, "eos_token_id": [128001, 128009]}`, 1)
	for _, f := range []string{"train.jsonl", "eval.jsonl"} {
		b, err := os.ReadFile(filepath.Join(root, "examples", "chat", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	train, err := os.ReadFile(filepath.Join(data, "train.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := bytes.Cut(train, []byte("\n"))
	bad := filepath.Join(data, "bad.jsonl")
	if err := os.WriteFile(bad, append(first, "\n{\"messages\": [\n"...), 0o644); err != nil {
		t.Fatal(err)
	}

	const token = "ui-test-token"
	addr := freeAddr(t)
	var logs bytes.Buffer
	serve := exec.Command(buildHone(t, root), "serve", "--addr", addr, "--home", home, "--data-root", data, "--token", token,
		"--concurrency", "2")
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		serve.Process.Kill()
		serve.Wait()
		if t.Failed() {
			t.Logf("hone serve:\n%s", logs.String())
		}
	}()
	c, _ := client.New(client.Config{Server: "http://" + addr, Token: token})
	ctx := context.Background()
	for i := 0; ; i++ {
		if _, err := c.ListRuns(ctx, client.ListRunsOptions{Limit: 1}); err == nil {
			break
		}
		if i > 300 {
			t.Fatalf("hone serve did not start:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A long run for the live list, the live curve, cancel and resume.
	for _, n := range []string{"main", "main.demo"} {
		if err := c.CreateCatalog(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	long, err := c.CreateRun(ctx, client.CreateRunRequest{Model: model, TrainDataPath: filepath.Join(data, "train.jsonl"),
		RegisterTo: "main.demo.long", TrainingDuration: "20000ba", LearningRate: 3e-3, ContextLength: 256, BatchRows: 2, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}

	// A 2×2 sweep with eval data for the compare view's grid.
	sweep, err := c.CreateSweep(ctx, client.CreateSweepRequest{CreateRunRequest: client.CreateRunRequest{Model: model,
		TrainDataPath: filepath.Join(data, "train.jsonl"), EvalDataPath: filepath.Join(data, "eval.jsonl"), RegisterTo: "main.demo.sweep",
		ContextLength: 256, BatchRows: 2, Seed: 3}, LearningRate: []float64{1e-3, 3e-3}, TrainingDuration: []string{"2ba", "3ba"}})
	if err != nil {
		t.Fatal(err)
	}

	settings, _ := json.Marshal(map[string]string{"url": "http://" + addr, "token": token, "playwright": playwright, "shots": shots,
		"model": model, "train": filepath.Join(data, "train.jsonl"), "eval": filepath.Join(data, "eval.jsonl"), "bad": bad,
		"longRun": long.Name, "sweep": sweep.Name})
	nctx, cancel := context.WithTimeout(ctx, 12*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(nctx, node, filepath.Join(root, "ui", "testdata", "browser.mjs"))
	cmd.Env = append(os.Environ(), "HONE_UI_TEST="+string(settings))
	out, err := cmd.CombinedOutput()
	t.Logf("browser.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("browser flows failed (%v); screenshots, failure.png included, in %s", err, shots)
	}
	if !strings.Contains(string(out), "[ui] ok") {
		t.Fatal("browser.mjs did not finish")
	}
	t.Logf("screenshots in %s", shots)
}

// buildHone builds the hone binary, so the test serves the UI as users get it.
func buildHone(t *testing.T, root string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hone")
	build := exec.Command("go", "build", "-o", bin, "hone/cmd/hone")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
