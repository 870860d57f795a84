package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// planJSON is the last line of `hone bench train --plan --json`.
type planJSON struct {
	Peak            int64            `json:"peak_bytes"`
	Parts           map[string]int64 `json:"parts"`
	Asked           int64            `json:"asked_peak_bytes"`
	Savings         []string         `json:"savings"`
	Recompute       bool             `json:"recompute"`
	KeepAttention   bool             `json:"keep_attention"`
	KeptLayers      int              `json:"keep_attention_layers"`
	CheckpointEvery int              `json:"checkpoint_every"`
	Fits            bool             `json:"fits"`
	Sharded         bool             `json:"sharded_optimizer"`
}

// runPlan runs `hone bench train --plan --json ARGS` and decodes its last line.
func runPlan(t *testing.T, args ...string) (res planJSON) {
	t.Helper()
	cmd := benchCmd()
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetArgs(append([]string{"train", "--plan", "--json"}, args...))
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	return res
}

// `hone bench train --plan --json` prints the memory plan without training:
// the last line holds peak_bytes and its parts, which add up to it, and
// recomputation shrinks only the activations.
func TestBenchTrainPlan(t *testing.T) {
	plan := func(args ...string) planJSON {
		t.Helper()
		res := runPlan(t, append([]string{"--config", "../../bench/configs/llama-3.2-1b.json",
			"--seq", "32768", "--batch", "1", "--lora-rank", "16", "--precision", "bf16"}, args...)...)
		var sum int64
		for _, b := range res.Parts {
			sum += b
		}
		if sum != res.Peak || res.Peak == 0 {
			t.Errorf("parts %v add up to %d, peak_bytes %d", res.Parts, sum, res.Peak)
		}
		for _, k := range []string{"weights", "optimizer_state", "gradients", "activations", "attention_scratch", "logits_chunk"} {
			if res.Parts[k] <= 0 {
				t.Errorf("part %s = %d, want positive (parts %v)", k, res.Parts[k], res.Parts)
			}
		}
		return res
	}
	// Planned against a terabyte, nothing needs turning on: the plan is
	// the options' own.
	full, rec := plan("--plan-memory", "1TiB"), plan("--plan-memory", "1TiB", "--recompute")
	if len(full.Savings) != 0 || full.Asked != full.Peak || full.Recompute || !rec.Recompute || !full.Fits {
		t.Errorf("with a terabyte: %+v, want no savings and the plan as asked", full)
	}
	// Plain recomputation keeps the last layer's attention outputs (its
	// one slot), and the plan says so.
	if !rec.KeepAttention || rec.KeptLayers != 1 || full.KeepAttention {
		t.Errorf("recompute: keep_attention %v of %d layers (without recomputation %v), want the last layer's", rec.KeepAttention, rec.KeptLayers, full.KeepAttention)
	}
	// Recomputation (with the MLP in chunks) shrinks the activations and the
	// bf16 operand scratch, nothing else.
	saved := full.Parts["activations"] - rec.Parts["activations"] + full.Parts["bf16_scratch"] - rec.Parts["bf16_scratch"]
	if rec.Parts["activations"] >= full.Parts["activations"] || rec.Parts["weights"] != full.Parts["weights"] || full.Peak-rec.Peak != saved {
		t.Errorf("recompute: parts %v, without %v: want only the activations and bf16 scratch smaller", rec.Parts, full.Parts)
	}
	// In 24 GiB recomputation keeps the attention outputs (they fit), and
	// the savings say so.
	roomy := plan("--plan-memory", "24GiB")
	if !roomy.Fits || !roomy.Recompute || !roomy.KeepAttention || roomy.CheckpointEvery > 1 || roomy.Peak <= rec.Peak ||
		!slices.Equal(roomy.Savings, []string{"activation recomputation keeping the attention outputs"}) {
		t.Errorf("in 24 GiB: %+v, want recomputation keeping the attention outputs named, its plan above plain recomputation's %d", roomy, rec.Peak)
	}
	// Planned against less than that, the plan printed is the one that
	// runs: with the savings it names, smaller than the plan asked for.
	// 10 GiB needs both savings with the flash attention's O(T) scratch
	// and with the blocked attention's larger one (CPUs without AVX-512 BF16).
	tight := plan("--plan-memory", "10GiB")
	if !tight.Fits || !tight.Recompute || tight.CheckpointEvery < 2 || len(tight.Savings) != 2 ||
		tight.Peak >= tight.Asked || tight.Asked != full.Peak || tight.Parts["activations"] >= rec.Parts["activations"] {
		t.Errorf("in 10 GiB: %+v, want recomputation and residual checkpoints named and their plan printed (asked %d)", tight, full.Peak)
	}
	// In 14 GiB with LoRA dropout every layer's attention outputs do not
	// fit (a 13.6 GiB plan) and plain recomputation does (9.8): only some
	// of the 16 layers keep theirs, and the plan and savings say how many.
	part := plan("--plan-memory", "14GiB", "--lora-dropout", "0.05")
	if k := part.KeptLayers; !part.Fits || !part.KeepAttention || part.CheckpointEvery > 1 || k < 2 || k > 15 ||
		!slices.Equal(part.Savings, []string{fmt.Sprintf("activation recomputation keeping the attention outputs of only %d layers", k)}) {
		t.Errorf("in 14 GiB with dropout: %+v, want recomputation keeping the attention outputs of some layers, named", part)
	}
}

// `hone bench generate --prompt-tokens N --prefill-chunk C` reads the
// prompts C tokens per call and reports the prompt tokens read per second.
func TestBenchGeneratePrefill(t *testing.T) {
	cmd := benchCmd()
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetArgs([]string{"generate", "--model", "../../engine/testdata/parity/tied_llama3", "--new-tokens", "2", "--streams", "2",
		"--prompt-tokens", "200", "--prefill-chunk", "64", "--json"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res struct {
		PrefillTokS  float64 `json:"prefill_tokens_per_s"`
		PrefillS     float64 `json:"prefill_seconds"`
		PrefillChunk int     `json:"prefill_chunk"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatal(err)
	}
	if res.PrefillChunk != 64 || res.PrefillS <= 0 || res.PrefillTokS != 400/res.PrefillS {
		t.Errorf("last line %q: want prefill_chunk 64 and prefill_tokens_per_s = 400 prompt tokens / prefill_seconds", lines[len(lines)-1])
	}
}

// `--ranks N --plan` plans a ZeRO-1 rank by default, as `--ranks N` runs
// one (dataparallel.Zero1Rank: its shard's moments, the exchange's
// buffers); `--shard-optimizer=false` plans plain data parallelism. In
// the memory of the rank's plan as asked, the rank fits with no saving
// where plain data parallelism needs recomputation.
func TestBenchTrainPlanZero1(t *testing.T) {
	memory := "1TiB"
	plan := func(args ...string) planJSON {
		t.Helper()
		return runPlan(t, append([]string{"--config", "../../bench/configs/llama-125m.json", "--plan-memory", memory,
			"--seq", "4096", "--batch", "4", "--precision", "bf16", "--ranks", "2"}, args...)...)
	}
	zero, plain := plan(), plan("--shard-optimizer=false")
	if !zero.Sharded || zero.Parts["exchange_scratch"] <= 0 || zero.Parts["collective_scratch"] <= 0 ||
		zero.Parts["optimizer_state"] >= plain.Parts["optimizer_state"] {
		t.Errorf("ZeRO-1 plan: sharded %v, parts %v; plain parts %v", zero.Sharded, zero.Parts, plain.Parts)
	}
	if plain.Sharded || plain.Parts["exchange_scratch"] != 0 {
		t.Errorf("plain plan: sharded %v, parts %v", plain.Sharded, plain.Parts)
	}
	t.Logf("ZeRO-1 rank: %d bytes (%v); plain: %d", zero.Peak, zero.Parts, plain.Peak)
	need := zero.Peak
	memory = strconv.FormatInt(max(2<<30+need, (need+8)/9*10), 10) // the budget keeps 10% and at least 2 GiB
	zero, plain = plan(), plan("--shard-optimizer=false")
	if !zero.Fits || len(zero.Savings) > 0 || zero.Recompute || zero.Peak != need || zero.Asked != need {
		t.Errorf("ZeRO-1 rank in %s bytes: %+v; want it as asked, %d bytes", memory, zero, need)
	}
	if !plain.Recompute || !slices.Contains(plain.Savings, "activation recomputation keeping the attention outputs") {
		t.Errorf("plain rank in %s bytes: %+v; want recomputation", memory, plain)
	}
}
