package train

import (
	"os"
	"strings"
	"testing"

	"hone/engine"
	"hone/engine/cpu"
)

func llama1B(t *testing.T) *engine.Config {
	t.Helper()
	b, err := os.ReadFile("../bench/configs/llama-3.2-1b.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := engine.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Unset, the context length is the model's maximum (131072 for Llama 3.2)
// when it fits, else the longest that fits the memory available: within the
// plan's budget, while 128 tokens more are not; the choice says why, and a
// resumed run keeps it whatever memory is free then.
func TestChooseContextDefault(t *testing.T) {
	c := llama1B(t)
	dev := cpu.New(0)
	spec, err := Spec{Method: "lora", Precision: "bf16", BatchRows: 1}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	got, err := chooseContext(spec, c, dev, "", 1<<50)
	if err != nil || got.Length != 131072 || !strings.Contains(got.Why, "maximum") {
		t.Errorf("with ample memory: %+v, %v; want 131072, the model's maximum", got, err)
	}
	// The default LoRA drops out (0.05): its MLP still runs in chunks, so
	// the maximum fits in 24 GiB (it needed 53 GiB when dropout kept the
	// MLP's (T, intermediate) buffers whole).
	if d := spec.LoRA.Dropout; d == nil || *d != 0.05 {
		t.Fatalf("default LoRA dropout %v, want 0.05", d)
	}
	if got, err = chooseContext(spec, c, dev, "", 24<<30); err != nil || got.Length != 131072 {
		t.Errorf("with 24 GiB: %+v, %v; want 131072, the model's maximum", got, err)
	}
	const avail = 16 << 30
	dir := t.TempDir()
	got, err = chooseContext(spec, c, dev, dir, avail)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d: %s", got.Length, got.Why)
	if got.Length >= 131072 || got.Length%128 != 0 || !strings.Contains(got.Why, "131072") || !strings.Contains(got.Why, "16.0 GiB") {
		t.Errorf("with 16 GiB: %+v; want a multiple of 128 below 131072 naming the maximum and the memory", got)
	}
	if _, _, err := planOptions(spec, c, dev, got.Length, avail); err != nil {
		t.Errorf("the chosen %d does not fit: %v", got.Length, err)
	}
	if _, _, err := planOptions(spec, c, dev, got.Length+128, avail); err == nil {
		t.Errorf("%d tokens fit as well: the choice %d is not the longest", got.Length+128, got.Length)
	}
	again, err := chooseContext(spec, c, dev, dir, 1<<50)
	if err != nil || again.Length != got.Length || !strings.Contains(again.Why, "as chosen when the run started") {
		t.Errorf("resumed with more memory free: %+v, %v; want the first choice %d kept", again, err, got.Length)
	}
}

// An explicit context length beyond the model's maximum is refused naming
// both numbers; one that does not fit is refused with the plan's numbers
// and the settings that would fit.
func TestChooseContextExplicit(t *testing.T) {
	c := llama1B(t)
	dev := cpu.New(0)
	spec, err := Spec{Precision: "bf16", BatchRows: 2, ContextLength: 200000}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chooseContext(spec, c, dev, "", 1<<50); err == nil || !strings.Contains(err.Error(), "200000") || !strings.Contains(err.Error(), "131072") {
		t.Errorf("context_length 200000 = %v, want a refusal naming 200000 and the maximum 131072", err)
	}
	spec.ContextLength = 32768
	_, err = chooseContext(spec, c, dev, "", 24<<30)
	if err == nil {
		t.Fatal("full fine-tuning of 1B at 2 × 32768 in 24 GiB was not refused")
	}
	for _, want := range []string{"not enough memory", "24.0 GiB is available", "32768", "method lora", "context length"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not name %q", err, want)
		}
	}
	spec.ContextLength = 1024
	if got, err := chooseContext(spec, c, dev, "", 24<<30); err != nil || got.Length != 1024 {
		t.Errorf("context_length 1024 = %+v, %v; want it as set", got, err)
	}
}

// A spec planned as one of N ranks with sharded parameters (ShardedOver,
// as runs plans a "sharding": "parameters" run for its data check) fits
// where the whole state does not: full fine-tuning of 1B in fp32 (16
// bytes a parameter, ~20 GiB) in 12 GiB is refused unsharded and admitted
// over 4 ranks.
func TestChooseContextShardedOver(t *testing.T) {
	c := llama1B(t)
	dev := cpu.New(0)
	spec, err := Spec{BatchRows: 1, ContextLength: 512}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	const avail = 12 << 30
	if _, err := chooseContext(spec, c, dev, "", avail); err == nil {
		t.Fatal("full fine-tuning of 1B in fp32 fits in 12 GiB unsharded: make the memory smaller")
	}
	if got, err := chooseContext(spec.ShardedOver(4), c, dev, "", avail); err != nil || got.Length != 512 {
		t.Errorf("sharded over 4 ranks: %+v, %v; want 512 tokens admitted", got, err)
	}
}

// A spec planned as one of N ranks with a sharded optimizer
// (OptimizerShardedOver, as a ZeRO-1 run plans itself) chooses its
// default context length for a rank's share of the AdamW moments: full
// fine-tuning of 1B in bf16 (18 bytes a parameter, ~21 GiB of state) in
// 24 GiB fits longer rows over 2 ranks (a rank holds 4 bytes a parameter
// of moments instead of 8) than unsharded, the longest the rank's plan
// (dataparallel.Zero1Rank) fits.
func TestChooseContextOptimizerShardedOver(t *testing.T) {
	c := llama1B(t)
	dev := cpu.New(0)
	spec, err := Spec{Precision: "bf16", BatchRows: 1}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	const avail = 26 << 30
	whole, err := chooseContext(spec, c, dev, "", avail)
	if err != nil {
		t.Fatal(err)
	}
	rank, err := chooseContext(spec.OptimizerShardedOver(2), c, dev, "", avail)
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := baseOptions(spec.OptimizerShardedOver(2), c)
	want := c.LongestContext(dev, opts, 1, c.MaxPositionEmbeddings, avail) / 128 * 128
	t.Logf("unsharded %d tokens, a ZeRO-1 rank of 2 %d", whole.Length, rank.Length)
	if rank.Length <= whole.Length || rank.Length != want {
		t.Errorf("over 2 ranks with a sharded optimizer: %d tokens (%s); unsharded %d, want %d", rank.Length, rank.Why, whole.Length, want)
	}
}

// A ZeRO-1 rank's run plan (planOptions) turns on only the savings the
// rank needs: at 4096 tokens in the memory of the rank's plan without
// savings, none, where the unsharded plan needs recomputation.
func TestPlanOptionsOptimizerShardedOver(t *testing.T) {
	c := llama1B(t)
	dev := cpu.New(0)
	spec, err := Spec{Precision: "bf16", BatchRows: 1}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	const T = 4096
	rank := spec.OptimizerShardedOver(2)
	opts, _ := baseOptions(rank, c)
	need := c.MemoryEstimate(dev, opts, 1, T)
	avail := max(2<<30+need, (need+8)/9*10) // the budget keeps 10% and at least 2 GiB
	if got, _, err := planOptions(spec, c, dev, T, avail); err == nil && !got.Recompute {
		t.Fatalf("unsharded: %+v, %v; want recomputation or a refusal", got, err)
	}
	if got, notes, err := planOptions(rank, c, dev, T, avail); err != nil || len(notes) > 0 || got.Recompute {
		t.Errorf("a ZeRO-1 rank of 2: %+v, %v, %v; want no savings", got, notes, err)
	}
}

// A LionW run with a sharded optimizer plans a rank's share of its one
// moment, not AdamW's two: the rank's optimizer state is half an AdamW
// rank's, and with memory where it matters (1B in bf16 over 2 ranks in
// 22 GiB) it chooses longer rows than an AdamW rank would.
func TestChooseContextLionWOptimizerShardedOver(t *testing.T) {
	c := llama1B(t)
	dev := cpu.New(0)
	adam, err := Spec{Precision: "bf16", BatchRows: 1}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	lion, err := Spec{Precision: "bf16", BatchRows: 1, Optimizer: "lionw"}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	aopts, _ := baseOptions(adam.OptimizerShardedOver(2), c)
	lopts, _ := baseOptions(lion.OptimizerShardedOver(2), c)
	a, l := c.MemoryPlan(dev, aopts, 1, 512), c.MemoryPlan(dev, lopts, 1, 512)
	if got, want := l.Parts[engine.PartOptimizer], a.Parts[engine.PartOptimizer]/2; got != want {
		t.Errorf("a LionW ZeRO-1 rank of 2 plans %d bytes of optimizer state, want %d (half an AdamW rank's)", got, want)
	}
	const avail = 22 << 30
	ac, aerr := chooseContext(adam.OptimizerShardedOver(2), c, dev, "", avail)
	lc, lerr := chooseContext(lion.OptimizerShardedOver(2), c, dev, "", avail)
	t.Logf("a ZeRO-1 rank of 2: AdamW %d tokens (%v), LionW %d (%v)", ac.Length, aerr, lc.Length, lerr)
	if lerr != nil || lc.Length <= ac.Length {
		t.Errorf("LionW over 2 ranks with a sharded optimizer: %d tokens, %v; want more than AdamW's %d", lc.Length, lerr, ac.Length)
	}
}
