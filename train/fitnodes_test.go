package train

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"hone/engine/cpu"
)

// A run that fits only on several ranks is refused naming the fewest nodes
// with sharded parameters that fit (fewer do not, those do), and how many
// more than the run has; LionW full fine-tuning (which shards) likewise,
// by its one moment; never nodes that do not fit (an NF4 base shards only
// its NF4 layers, its embeddings and head are whole on every node).
func TestRefusalNamesNodes(t *testing.T) {
	c := llama1B(t)
	dev := cpu.New(0)
	spec, err := Spec{BatchRows: 1, ContextLength: 512}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	const avail = 12 << 30
	nodesIn := func(err error) int {
		t.Helper()
		m := regexp.MustCompile(`"nodes": (\d+) with "sharding": "parameters" \(([^)]*)GiB per rank\)`).FindStringSubmatch(fmt.Sprint(err))
		if m == nil {
			t.Fatalf("refusal %v names no nodes with sharded parameters", err)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	_, err = chooseContext(spec, c, dev, "", avail)
	t.Log(err)
	n := nodesIn(err)
	if n < 2 {
		t.Fatalf("names %d nodes", n)
	}
	if _, err := chooseContext(spec.ShardedOver(n), c, dev, "", avail); err != nil {
		t.Errorf("%d nodes named, and refused sharded over them: %v", n, err)
	}
	if n > 2 {
		if _, err := chooseContext(spec.ShardedOver(n-1), c, dev, "", avail); err == nil {
			t.Errorf("%d nodes named, and %d fit too", n, n-1)
		}
	}
	// The run's own Fit path (at the start of training) says the same.
	if _, _, err := planOptions(spec, c, dev, 512, avail); nodesIn(err) != n {
		t.Errorf("planOptions' refusal %v: want %d nodes", err, n)
	}
	// Already on 2 sharded nodes (if they do not fit): how many more.
	if n > 2 {
		_, err := chooseContext(spec.OnNodes(2).ShardedOver(2), c, dev, "", avail)
		if nodesIn(err) != n || !strings.Contains(err.Error(), fmt.Sprintf("(%d more; ", n-2)) {
			t.Errorf("on 2 sharded nodes: %v; want %d nodes, %d more", err, n, n-2)
		}
	}
	// On as many unsharded nodes: sharding them is enough.
	if _, err := chooseContext(spec.OnNodes(n), c, dev, "", avail); err == nil || !strings.Contains(err.Error(), fmt.Sprintf(`"sharding": "parameters" on the run's %d nodes`, n)) {
		t.Errorf("on %d unsharded nodes: %v; want sharding them named", n, err)
	}
	// LionW full fine-tuning (at less memory: it needs less): nodes that
	// fit are named.
	lion, err := Spec{BatchRows: 1, ContextLength: 512, Optimizer: "lionw"}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	_, err = chooseContext(lion, c, dev, "", 8<<30)
	if ln := nodesIn(err); ln < 2 {
		t.Errorf("LionW refusal %v: %d nodes", err, ln)
	} else if _, err := chooseContext(lion.ShardedOver(ln), c, dev, "", 8<<30); err != nil {
		t.Errorf("LionW: %d nodes named, and refused sharded over them: %v", ln, err)
	}
	// Nodes that do not fit are never named.
	nf4, err := Spec{Method: "lora", Precision: "bf16", BatchRows: 1, ContextLength: 512, LoRA: &LoRASpec{QuantizeBase: "nf4"}}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		spec  Spec
		avail int64
	}{"nf4 base": {nf4, 2<<30 + 256<<20}} {
		_, err := chooseContext(tc.spec, c, dev, "", tc.avail)
		if err == nil || !strings.Contains(err.Error(), "not enough memory") {
			t.Fatalf("%s: %v, want a refusal (make the memory smaller)", name, err)
		}
		if strings.Contains(err.Error(), "sharding") || strings.Contains(err.Error(), "nodes") {
			t.Errorf("%s: refusal %v names sharding, which create refuses", name, err)
		}
	}
}

// A default context length shortened to fit says how many nodes with
// sharded parameters would fit the model's maximum, and they do.
func TestDefaultContextNamesNodes(t *testing.T) {
	c := llama1B(t)
	dev := cpu.New(0)
	spec, err := Spec{Precision: "bf16", BatchRows: 1}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	const avail = 24 << 30
	got, err := chooseContext(spec, c, dev, "", avail)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(got.Why)
	m := regexp.MustCompile(`"nodes": (\d+) with "sharding": "parameters" would (fit the maximum|allow (\d+) tokens)`).FindStringSubmatch(got.Why)
	if got.Length >= 131072 || m == nil {
		t.Fatalf("default %d: %q; want shortened, naming nodes with sharded parameters", got.Length, got.Why)
	}
	n, _ := strconv.Atoi(m[1])
	want := 131072
	if m[3] != "" {
		want, _ = strconv.Atoi(m[3])
	}
	if sh, err := chooseContext(spec.ShardedOver(n), c, dev, "", avail); err != nil || sh.Length != want {
		t.Errorf("sharded over %d nodes: %+v, %v; want %d tokens", n, sh, err, want)
	}
}
