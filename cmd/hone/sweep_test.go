package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// hone sweep create sends the grid as lists and the run settings as hone
// create does; hone sweep get prints the grid with the best run marked.
func TestSweepCreateAndGet(t *testing.T) {
	var body []byte
	sweep := `{"name":"sweep-tiny-01","status":"COMPLETED","experiment_path":"/Users/ann/hone/sweep-tiny-01","best":"tiny-b","best_by":"eval_loss",
		"runs":[{"name":"tiny-a","status":"COMPLETED","learning_rate":1e-5,"training_duration":"1ep","eval_loss":2.5},
		{"name":"tiny-b","status":"COMPLETED","learning_rate":3e-5,"training_duration":"1ep","eval_loss":2.25}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ = io.ReadAll(r.Body)
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, sweep)
	}))
	defer srv.Close()
	run := func(args ...string) string {
		cmd := sweepCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append(args, "--server", srv.URL))
		if err := cmd.Execute(); err != nil {
			t.Fatalf("hone sweep %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	run("create", "--model", "m", "--train-data-path", "d.jsonl", "--register-to", "main.demo", "--user", "ann",
		"--learning-rate", "1e-5,3e-5", "--training-duration", "1ep,3ep", "--optimizer", "lionw", "--batch-rows", "2")
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("request body %q: %v", body, err)
	}
	opt, _ := m["optimizer"].(map[string]any)
	if fmt.Sprint(m["learning_rate"]) != "[1e-05 3e-05]" || fmt.Sprint(m["training_duration"]) != "[1ep 3ep]" ||
		m["batch_rows"] != 2.0 || opt["name"] != "lionw" || m["model"] != "m" {
		t.Fatalf("hone sweep create sent %s", body)
	}
	out := run("get", "sweep-tiny-01")
	var bestLine string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "best") {
			bestLine = l
		}
	}
	if !strings.HasPrefix(bestLine, "tiny-b ") || !strings.Contains(bestLine, "2.2500") || !strings.Contains(bestLine, "best (eval loss)") {
		t.Fatalf("hone sweep get printed\n%s\nwant tiny-b marked best", out)
	}
}
