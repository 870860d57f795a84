package engine_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"hone/engine"
	"hone/safetensors"
)

func loraConfigOf(t *testing.T, name string) *engine.Config {
	t.Helper()
	c, err := engine.LoadConfig(filepath.Join("testdata", "lora", name))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Each architecture adapts its own modules, under PEFT's names: no targets
// means its defaults; a target it lacks is refused naming the valid ones
// (never skipped); DBRX's fused experts are refused as PEFT cannot wrap them.
func TestLoRATargetsPerArchitecture(t *testing.T) {
	dev := openDevice(t, "ref")
	llama, mixtral, dbrx := loraConfigOf(t, "gqa_packed"), loraConfigOf(t, "mixtral_experts"), loraConfigOf(t, "dbrx_qkv_clip")
	specs := func(c *engine.Config, lc engine.LoRAConfig) ([]engine.ParamSpec, []string, error) {
		lc.Rank, lc.Alpha = 2, 4
		a, err := engine.NewAdapter(c, dev, lc)
		if err != nil {
			return nil, nil, err
		}
		defer a.Close()
		return a.Specs, a.Config.Targets, nil
	}
	shape := func(ss []engine.ParamSpec, name string) []int {
		for _, s := range ss {
			if s.Name == name {
				return s.Shape
			}
		}
		return nil
	}
	F, C, E := mixtral.IntermediateSize, mixtral.HiddenSize, mixtral.NumLocalExperts

	ss, targets, err := specs(mixtral, engine.LoRAConfig{})
	if err != nil || strings.Join(targets, ",") != "q_proj,k_proj,v_proj,o_proj,w1,w2,w3" {
		t.Fatalf("Mixtral defaults: %v (%v)", targets, err)
	}
	if len(ss) != 2*mixtral.NumHiddenLayers*(4+3*E) {
		t.Errorf("Mixtral defaults: %d tensors", len(ss))
	}
	if s := shape(ss, "base_model.model.model.layers.1.block_sparse_moe.experts.3.w2.lora_A.weight"); !slices.Equal(s, []int{2, F}) {
		t.Errorf("experts.3.w2.lora_A shape %v, want [2 %d]", s, F)
	}
	if s := shape(ss, "base_model.model.model.layers.0.block_sparse_moe.experts.0.w1.lora_B.weight"); !slices.Equal(s, []int{F, 2}) {
		t.Errorf("experts.0.w1.lora_B shape %v, want [%d 2]", s, F)
	}
	if shape(ss, "base_model.model.model.layers.0.block_sparse_moe.gate.lora_A.weight") != nil {
		t.Error("the router is adapted by default")
	}
	ss, _, err = specs(mixtral, engine.LoRAConfig{Targets: []string{"gate"}})
	if s := shape(ss, "base_model.model.model.layers.0.block_sparse_moe.gate.lora_B.weight"); err != nil || !slices.Equal(s, []int{E, 2}) {
		t.Errorf("router target: lora_B shape %v (%v), want [%d 2]", s, err, E)
	}
	ss, _, err = specs(mixtral, engine.LoRAConfig{TargetRegex: `.*\.experts\.0\.w1`})
	if err != nil || len(ss) != 2*mixtral.NumHiddenLayers {
		t.Errorf("regex on expert 0's w1: %d tensors (%v), want %d", len(ss), err, 2*mixtral.NumHiddenLayers)
	}

	ss, targets, err = specs(dbrx, engine.LoRAConfig{})
	if err != nil || strings.Join(targets, ",") != "Wqkv,out_proj" {
		t.Fatalf("DBRX defaults: %v (%v)", targets, err)
	}
	if s := shape(ss, "base_model.model.transformer.blocks.1.norm_attn_norm.attn.Wqkv.lora_B.weight"); !slices.Equal(s, []int{dbrx.QDim() + 2*dbrx.KVDim(), 2}) {
		t.Errorf("Wqkv.lora_B shape %v", s)
	}
	if s := shape(ss, "base_model.model.transformer.blocks.0.norm_attn_norm.attn.out_proj.lora_A.weight"); !slices.Equal(s, []int{2, C}) {
		t.Errorf("out_proj.lora_A shape %v", s)
	}
	if _, targets, err = specs(llama, engine.LoRAConfig{}); err != nil || !slices.Equal(targets, engine.LoRATargets) {
		t.Errorf("Llama defaults: %v (%v)", targets, err)
	}

	for _, c := range []struct {
		cfg     *engine.Config
		targets []string
		want    []string
	}{
		{mixtral, []string{"q_proj", "gate_proj"}, []string{`"gate_proj"`, "Mixtral", "w1"}},
		{mixtral, []string{"down_proj"}, []string{`"down_proj"`, "w2"}},
		{mixtral, []string{"Wqkv"}, []string{`"Wqkv"`, "q_proj"}},
		{dbrx, []string{"w1"}, []string{`"w1"`, "fused", "Wqkv"}},
		{dbrx, []string{"q_proj"}, []string{`"q_proj"`, "Wqkv"}},
		{llama, []string{"w1"}, []string{`"w1"`, "down_proj"}},
	} {
		if _, _, err := specs(c.cfg, engine.LoRAConfig{Targets: c.targets}); err == nil || !containsAll(err.Error(), c.want) {
			t.Errorf("%s targets %v: error %v, want one naming %v", c.cfg.ModelType, c.targets, err, c.want)
		}
	}
	ok := `"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": `
	if _, err := engine.ParseAdapterConfig([]byte(`{` + ok + `["Wqkv", "v1"]}`)); err == nil || !strings.Contains(err.Error(), "fused") {
		t.Errorf("v1: %v, want an error saying DBRX's experts are fused", err)
	}
	// all-linear: every module of the architecture, the router included (PEFT's nn.Linear set).
	lc, err := engine.ParseAdapterConfig([]byte(`{` + ok + `"all-linear"}`))
	if err != nil {
		t.Fatal(err)
	}
	for c, want := range map[*engine.Config]string{mixtral: "q_proj,k_proj,v_proj,o_proj,gate,w1,w2,w3", dbrx: "Wqkv,out_proj,layer", llama: strings.Join(engine.LoRATargets, ",")} {
		if _, targets, err := specs(c, lc); err != nil || strings.Join(targets, ",") != want {
			t.Errorf("%s all-linear: %v (%v), want %s", c.ModelType, targets, err, want)
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// Saving a Mixtral expert adapter or a DBRX Wqkv adapter and loading it
// back gives the same tensors under the same PEFT names and targets.
func TestAdapterSaveLoadMoE(t *testing.T) {
	dev := openDevice(t, "ref")
	for _, name := range []string{"mixtral_experts", "dbrx_qkv_clip"} {
		m, a := loadLoRA(t, dev, name, engine.Options{})
		out := t.TempDir()
		if err := a.Save(out); err != nil {
			t.Fatal(err)
		}
		b, err := engine.LoadAdapter(out, m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(b.Config.Targets, a.Config.Targets) || len(b.Specs) != len(a.Specs) {
			t.Errorf("%s: targets %v after round trip, %v before", name, b.Config.Targets, a.Config.Targets)
		}
		for i := range a.Specs {
			if b.Specs[i].Name != a.Specs[i].Name {
				t.Errorf("%s: tensor %d is %s after round trip, %s before", name, i, b.Specs[i].Name, a.Specs[i].Name)
			}
		}
		if !slices.Equal(engine.HostView(dev, b.Params), engine.HostView(dev, a.Params)) {
			t.Errorf("%s: tensors differ after round trip", name)
		}
		m.Close()
		a.Close()
		b.Close()
	}
}

// Serving's path for an adapter version: LoadWithAdapter merges a Mixtral
// expert adapter or a DBRX Wqkv adapter into its base, giving the PyTorch
// reference's logits of base + adapter.
func TestLoadWithAdapterMoE(t *testing.T) {
	for _, name := range []string{"mixtral_experts", "dbrx_qkv_clip"} {
		dir := filepath.Join("testdata", "lora", name)
		m, err := engine.LoadWithAdapter(filepath.Join(dir, "adapter"), openDevice(t, "ref"), engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
		lf, err := safetensors.Open(filepath.Join(dir, "logits.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		if e := relErr(m.Logits(bt), readTensor(t, lf, "logits")); e > parityTol {
			t.Errorf("%s: logits relative error %.3g > %g", name, e, parityTol)
		}
		lf.Close()
		m.Close()
	}
}
