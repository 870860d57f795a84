package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"hone/settings"
)

// createBody runs hone create with args against a server that records the
// request body and answers as the API does.
func createBody(t *testing.T, args ...string) map[string]any {
	t.Helper()
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"name":"tiny-0a1b2c3d","status":"QUEUED"}`)
	}))
	defer srv.Close()
	cmd := createCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"--server", srv.URL, "--model", "m", "--train-data-path", "d.jsonl", "--register-to", "main.demo",
		"--user", "ann"}, args...))
	if err := cmd.Execute(); err != nil {
		t.Fatalf("hone create %v: %v\n%s", args, err, out.String())
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("request body %q: %v", body, err)
	}
	return m
}

// Flags left out send nothing, so the server's defaults apply; a zero given
// on the command line (no decay, no clipping, no warmup) is sent as 0.
func TestCreateSendsOnlyGivenSettings(t *testing.T) {
	m := createBody(t)
	for _, k := range []string{"learning_rate", "training_duration", "batch_rows", "keep_checkpoints", "precision", "optimizer"} {
		if v, ok := m[k]; ok {
			t.Errorf("hone create without --%s sent %s = %v", k, k, v)
		}
	}
	m = createBody(t, "--weight-decay", "0", "--max-grad-norm", "0", "--warmup-frac", "0", "--beta1", "0",
		"--lr-decay", "constant", "--learning-rate", "3e-4", "--batch-rows", "2")
	opt, _ := m["optimizer"].(map[string]any)
	want := map[string]any{"weight_decay": 0.0, "max_grad_norm": 0.0, "warmup_frac": 0.0, "beta1": 0.0, "decay": "constant"}
	for k, v := range want {
		if got, ok := opt[k]; !ok || got != v {
			t.Errorf("optimizer.%s = %v (sent: %v), want %v", k, got, ok, v)
		}
	}
	if _, ok := opt["beta2"]; ok {
		t.Errorf("optimizer.beta2 sent without --beta2: %v", opt)
	}
	if m["learning_rate"] != 3e-4 || m["batch_rows"] != 2.0 {
		t.Errorf("learning_rate %v batch_rows %v, want 3e-4 and 2", m["learning_rate"], m["batch_rows"])
	}
}

// The defaults hone create --help shows are package settings' values.
func TestCreateHelpShowsSettingsDefaults(t *testing.T) {
	fl := createCmd().Flags()
	for flag, want := range map[string]string{
		"learning-rate":     strconv.FormatFloat(settings.LearningRate, 'g', -1, 64),
		"training-duration": settings.Duration,
		"batch-rows":        strconv.Itoa(settings.BatchRows),
		"grad-accum":        strconv.Itoa(settings.GradAccum),
		"keep-checkpoints":  strconv.Itoa(settings.KeepCheckpoints),
		"precision":         settings.Precision,
		"nodes":             strconv.Itoa(settings.Nodes),
		"sharding":          settings.Sharding,
		"warmup-frac":       strconv.FormatFloat(settings.WarmupFrac, 'g', -1, 64),
		"lr-decay":          settings.Decay,
		"weight-decay":      strconv.FormatFloat(settings.WeightDecay, 'g', -1, 64),
		"max-grad-norm":     strconv.FormatFloat(settings.MaxGradNorm, 'g', -1, 64),
		"beta1":             strconv.FormatFloat(settings.Beta1, 'g', -1, 64),
		"beta2":             strconv.FormatFloat(settings.Beta2, 'g', -1, 64),
		"eps":               strconv.FormatFloat(settings.Eps, 'g', -1, 64),
	} {
		f := fl.Lookup(flag)
		if f == nil {
			t.Errorf("hone create has no --%s", flag)
			continue
		}
		if f.DefValue != want {
			t.Errorf("--%s default %q, want settings' %q", flag, f.DefValue, want)
		}
	}
	if u := fl.Lookup("lr-decay").Usage; u != settings.Help("optimizer.decay") {
		t.Errorf("--lr-decay help %q, want settings.Help(optimizer.decay) %q", u, settings.Help("optimizer.decay"))
	}
}

// The LoRA flags send method and lora settings as the API names them,
// only those given (dropout 0 included), and nothing without them.
func TestCreateSendsLoRASettings(t *testing.T) {
	m := createBody(t)
	for _, k := range []string{"method", "lora", "adapter_path", "register_adapter"} {
		if v, ok := m[k]; ok {
			t.Errorf("hone create without LoRA flags sent %s = %v", k, v)
		}
	}
	m = createBody(t, "--method", "lora", "--lora-rank", "8", "--lora-dropout", "0", "--lora-targets", "q_proj,v_proj",
		"--lora-rslora", "--adapter", "/no/such/adapter", "--register-adapter")
	l, _ := m["lora"].(map[string]any)
	got, _ := json.Marshal(l)
	if m["method"] != "lora" || string(got) != `{"dropout":0,"rank":8,"target_modules":["q_proj","v_proj"],"use_rslora":true}` {
		t.Errorf("method %v, lora %s", m["method"], got)
	}
	if m["adapter_path"] != "/no/such/adapter" || m["register_adapter"] != true {
		t.Errorf("adapter_path %v register_adapter %v", m["adapter_path"], m["register_adapter"])
	}
	fl := createCmd().Flags()
	for flag, want := range map[string]string{"method": settings.Method, "lora-rank": strconv.Itoa(settings.LoRARank),
		"lora-alpha": strconv.FormatFloat(settings.LoRAAlpha, 'g', -1, 64), "lora-dropout": strconv.FormatFloat(settings.LoRADropout, 'g', -1, 64)} {
		if f := fl.Lookup(flag); f == nil || f.DefValue != want {
			t.Errorf("--%s: %+v, want default %q", flag, f, want)
		}
	}
}

// --nodes and --sharding send nodes and sharding as the API names them,
// and nothing without them.
func TestCreateSendsSharding(t *testing.T) {
	if m := createBody(t); m["nodes"] != nil || m["sharding"] != nil {
		t.Errorf("hone create without --nodes, --sharding sent nodes %v, sharding %v", m["nodes"], m["sharding"])
	}
	if m := createBody(t, "--nodes", "4", "--sharding", "parameters"); m["nodes"] != 4.0 || m["sharding"] != "parameters" {
		t.Errorf("hone create --nodes 4 --sharding parameters sent nodes %v, sharding %v", m["nodes"], m["sharding"])
	}
}
