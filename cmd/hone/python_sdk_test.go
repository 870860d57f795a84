package main

import (
	"context"
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

// TestPythonClient runs the Python client's unittest suite (python/tests)
// and a notebook cell written for the hosted product's SDK
// (python/examples/product_quickstart.py, only its import changed) with
// Debian's python3 against a real hone serve: a tiny model in the
// Hugging Face cache under the product's model id, the data in a catalog
// volume at the product's dbfs:/Volumes path. It fails, never skips, when
// python3 is missing. HONE_TEST_PYTHON names another interpreter.
func TestPythonClient(t *testing.T) {
	python := "/usr/bin/python3"
	if p := os.Getenv("HONE_TEST_PYTHON"); p != "" {
		python = p // another interpreter, e.g. to check the oldest supported Python
	}
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("Debian's python3 is required for the Python client test (scripts/install-deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	hf := filepath.Join(dir, "hf")
	repo := filepath.Join(hf, "hub", "models--meta-llama--Llama-3.2-3B-Instruct")
	testmodel.Write(t, filepath.Join(repo, "snapshots", "0123abcd"), testmodel.Llama3Tiny, 3)
	os.MkdirAll(filepath.Join(repo, "refs"), 0o755)
	if err := os.WriteFile(filepath.Join(repo, "refs", "main"), []byte("0123abcd"), 0o644); err != nil {
		t.Fatal(err)
	}
	token := "python-client-token-0123"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o755)
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := serveCmd()
	cmd.SetArgs([]string{"--home", filepath.Join(dir, "home"), "--data-root", data, "--hf-home", hf, "--addr", addr,
		"--token-file", tokenFile, "--lease-ttl", "5s"})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hone serve: %v", err)
		}
	}()
	c, err := client.New(client.Config{Server: "http://" + addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err = c.ListRuns(ctx, client.ListRunsOptions{}); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("hone serve did not answer: %v", err)
	}
	for _, n := range []string{"main", "main.mydirectory"} {
		if err := c.CreateCatalog(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CreateVolume(ctx, "main.mydirectory.ift"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"train.jsonl", "eval.jsonl"} {
		fh, err := os.Open(filepath.Join(testassets.Root(t), "examples", "chat", f))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.PutFile(ctx, "/Volumes/main/mydirectory/ift/"+f, fh)
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
	}

	pkg := filepath.Join(testassets.Root(t), "python")
	env := append(os.Environ(), "PYTHONPATH="+pkg, "PYTHONDONTWRITEBYTECODE=1", "HONE_SERVER=http://"+addr, "HONE_TOKEN="+token,
		"HONE_TEST_MODEL=meta-llama/Llama-3.2-3B-Instruct", "HONE_TEST_TRAIN=dbfs:/Volumes/main/mydirectory/ift/train.jsonl",
		"HONE_TEST_EVAL=dbfs:/Volumes/main/mydirectory/ift/eval.jsonl", "HONE_TEST_REGISTER=main.mydirectory")
	run := func(args ...string) string {
		t.Helper()
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Minute)
		defer pcancel()
		py := exec.CommandContext(pctx, python, args...)
		py.Env, py.Dir = env, pkg
		out, err := py.CombinedOutput()
		if err != nil {
			t.Fatalf("python3 %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := run("-m", "unittest", "discover", "-v", "-s", "tests")
	t.Logf("unittest:\n%s", out)
	if !strings.Contains(out, "Ran 6 tests") || !strings.Contains(out, "\nOK") || strings.Contains(out, "skipped") {
		t.Errorf("the unittest suite did not run all its tests:\n%s", out)
	}

	out = run("examples/product_quickstart.py")
	t.Logf("product_quickstart.py:\n%s", out)
	for _, want := range []string{"COMPLETED", "STOPPED", "[]"} {
		if !strings.Contains(out, want) {
			t.Errorf("product_quickstart.py printed no %q", want)
		}
	}
	// What the script did, as the native API sees it.
	list, err := c.ListRuns(ctx, client.ListRunsOptions{User: "hone", ExperimentPath: "/Users/hone/hone"})
	if err != nil {
		t.Fatal(err)
	}
	var completed, stopped int
	for _, r := range list.Runs {
		if r.Config.TrainDataPath != "dbfs:/Volumes/main/mydirectory/ift/train.jsonl" {
			continue
		}
		switch r.Status {
		case client.StatusCompleted:
			completed++
			if !strings.HasPrefix(r.RegisteredModel, "main.mydirectory.") {
				t.Errorf("run %s registered %q", r.Name, r.RegisteredModel)
			}
		case client.StatusStopped, client.StatusStopping:
			stopped++
		}
	}
	if completed < 2 || stopped < 1 {
		t.Errorf("after the tests and the script: %d completed and %d stopped runs on the volume data, want at least 2 and 1", completed, stopped)
	}
}
