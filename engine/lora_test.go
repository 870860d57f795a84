package engine_test

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
	"hone/safetensors"
)

// The fixtures under testdata/lora come from tools/reference/llama_reference.py:
// a float64 PyTorch LoRA written from the math, on a base model, with PEFT
// adapter directories whose lora_B is non-zero.
var loraCases = []string{"gqa_packed", "tied_llama3_rslora", "bias_packed", "mistral_bf16_base", "mixtral_aux_attn",
	"mixtral_experts", "mixtral_experts_rslora_empty", "dbrx_qkv_clip"}

func loadLoRA(t *testing.T, dev engine.Device, name string, opt engine.Options) (*engine.Model, *engine.Adapter) {
	t.Helper()
	dir := filepath.Join("testdata", "lora", name)
	m, err := engine.Load(dir, dev, opt)
	if err != nil {
		t.Fatal(err)
	}
	a, err := engine.LoadAdapter(filepath.Join(dir, "adapter"), m)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Attach(a); err != nil {
		t.Fatal(err)
	}
	return m, a
}

func TestLoRAParityWithReference(t *testing.T) {
	for _, dev := range parityDevices {
		for _, name := range loraCases {
			for _, opt := range []engine.Options{{}, {Recompute: true, LossChunk: 5}, {Recompute: true, MLPChunk: 3}, {Recompute: true, CheckpointEvery: 2},
				{Recompute: true, KeepAttention: true, CheckpointEvery: 2}} {
				t.Run(dev+"/"+name, func(t *testing.T) { checkLoRAParity(t, openDevice(t, dev), name, opt) })
			}
		}
	}
}

func checkLoRAParity(t *testing.T, dev engine.Device, name string, opt engine.Options) {
	dir := filepath.Join("testdata", "lora", name)
	m, a := loadLoRA(t, dev, name, opt)
	bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)

	lf, err := safetensors.Open(filepath.Join(dir, "logits.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if e := relErr(m.Logits(bt), readTensor(t, lf, "logits")); e > parityTol {
		t.Errorf("logits: relative error %.3g > %g", e, parityTol)
	}

	gf, err := safetensors.Open(filepath.Join(dir, "grads.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()
	m.ZeroGrad()
	a.ZeroGrad()
	sum, n := m.ForwardBackward(bt, 1/float32(bt.Scored()))
	wantLoss := float64(readTensor(t, gf, "loss")[0])
	if got := sum / float64(n); math.Abs(got-wantLoss) > parityTol*wantLoss {
		t.Errorf("loss = %.7f, reference %.7f", got, wantLoss)
	}
	grads := engine.HostView(dev, a.Grads)
	if len(gf.Tensors()) != len(a.Specs)+1 {
		t.Errorf("reference has %d gradients, the adapter %d tensors", len(gf.Tensors())-1, len(a.Specs))
	}
	for _, s := range a.Specs {
		if e := relErr(grads[s.Offset:s.Offset+s.Size()], readTensor(t, gf, s.Name)); e > parityTol {
			t.Errorf("grad %s (opt %+v): relative error %.3g > %g", s.Name, opt, e, parityTol)
		}
	}
	// Frozen base: no gradient reaches the embeddings, the head or any projection.
	base := engine.HostView(dev, m.Grads.Arena)
	for _, s := range m.Config.ParamSpecs() {
		if parts := strings.Split(s.Name, "."); strings.Contains(parts[len(parts)-2], "norm") {
			continue // the norms' backward computes their gradient with dx; it is unused
		}
		for _, v := range base[s.Offset : s.Offset+s.Size()] {
			if v != 0 {
				t.Fatalf("frozen base weight %s has a gradient", s.Name)
			}
		}
	}
	m.Close()
	a.Close()
	if ref, ok := dev.(interface{ Live() int }); ok && ref.Live() != 0 {
		t.Errorf("%d device buffers live after Close", ref.Live())
	}
}

// Saving an adapter and loading it back gives the same tensors and config.
func TestAdapterSaveLoad(t *testing.T) {
	dev := openCPU(t)
	m, a := loadLoRA(t, dev, "tied_llama3_rslora", engine.Options{})
	out := t.TempDir()
	if err := a.Save(out); err != nil {
		t.Fatal(err)
	}
	b, err := engine.LoadAdapter(out, m)
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.Rank != a.Config.Rank || b.Config.Alpha != a.Config.Alpha || b.Config.RSLoRA != a.Config.RSLoRA ||
		strings.Join(b.Config.Targets, ",") != strings.Join(a.Config.Targets, ",") {
		t.Errorf("config after round trip %+v, before %+v", b.Config, a.Config)
	}
	if e := relErr(engine.HostView(dev, b.Params), engine.HostView(dev, a.Params)); e != 0 {
		t.Errorf("tensors differ after round trip (%g)", e)
	}
}

func TestParseAdapterConfigRefuses(t *testing.T) {
	ok := `"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]`
	for _, c := range []struct{ json, field string }{
		{`{` + ok + `, "use_dora": true}`, "use_dora"},
		{`{` + ok + `, "rank_pattern": {"q_proj": 4}}`, "rank_pattern"},
		{`{` + ok + `, "fan_in_fan_out": true}`, "fan_in_fan_out"},
		{`{` + ok + `, "modules_to_save": ["lm_head"]}`, "modules_to_save"},
		{`{` + ok + `, "some_future_feature": 3}`, "some_future_feature"},
		{`{` + ok + `, "bias": "all"}`, "bias"},
		{`{` + strings.Replace(ok, `"LORA"`, `"IA3"`, 1) + `}`, "peft_type"},
		{`{` + strings.Replace(ok, `"CAUSAL_LM"`, `"SEQ_CLS"`, 1) + `}`, "task_type"},
		{`{` + strings.Replace(ok, `"r": 8`, `"r": 0`, 1) + `}`, `"r"`},
		{`{` + strings.Replace(ok, `["q_proj"]`, `"(q_proj"`, 1) + `}`, "target_modules"},
		{`{` + strings.Replace(ok, `["q_proj"]`, `["q_proj", "lm_head"]`, 1) + `}`, "target_modules"},
		{`{` + ok + `, "lora_dropout": 1.5}`, "lora_dropout"},
		{`{` + ok + `, "layers_pattern": "h"}`, "layers_pattern"},
	} {
		if _, err := engine.ParseAdapterConfig([]byte(c.json)); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: error %v, want one naming %s", c.json, err, c.field)
		}
	}
	lc, err := engine.ParseAdapterConfig([]byte(`{` + ok + `, "use_dora": false, "layers_to_transform": null, "rank_pattern": {}, "megatron_core": "megatron.core", "use_rslora": true}`))
	if err != nil || lc.Rank != 8 || !lc.RSLoRA || lc.Scale() != float32(16/math.Sqrt(8)) {
		t.Errorf("neutral PEFT keys: %+v, %v", lc, err)
	}
}

// An adapter directory whose tensors do not match its config is refused by tensor name.
func TestLoadAdapterRefusesMismatch(t *testing.T) {
	dev := openCPU(t)
	src := filepath.Join("testdata", "lora", "gqa_packed")
	m, err := engine.Load(src, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	raw, _ := os.ReadFile(filepath.Join(src, "adapter", engine.AdapterConfigFile))
	os.WriteFile(filepath.Join(dir, engine.AdapterConfigFile), []byte(strings.Replace(string(raw), `"r": 4`, `"r": 3`, 1)), 0o644)
	b, _ := os.ReadFile(filepath.Join(src, "adapter", engine.AdapterWeightsFile))
	os.WriteFile(filepath.Join(dir, engine.AdapterWeightsFile), b, 0o644)
	if _, err := engine.LoadAdapter(dir, m); err == nil || !strings.Contains(err.Error(), "lora_A.weight\" has shape [4") {
		t.Errorf("rank mismatch: %v", err)
	}
}

// In BF16 mode the base projections run on bf16 operands while the adapter
// stays fp32; loss and adapter gradients are held to the BF16 tolerance of
// TestBF16AgainstReference.
func TestLoRABF16AgainstReference(t *testing.T) {
	const lossTol, tensorTol = 1e-2, 3e-2
	for _, devName := range parityDevices {
		for _, opt := range []engine.Options{{BF16: true}, {BF16: true, CompactBF16: true, Recompute: true}} {
			t.Run(devName, func(t *testing.T) {
				dev := openDevice(t, devName)
				dir := filepath.Join("testdata", "lora", "gqa_packed")
				m, a := loadLoRA(t, dev, "gqa_packed", opt)
				bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
				gf, err := safetensors.Open(filepath.Join(dir, "grads.safetensors"))
				if err != nil {
					t.Fatal(err)
				}
				defer gf.Close()
				a.ZeroGrad()
				sum, n := m.ForwardBackward(bt, 1/float32(bt.Scored()))
				if want := float64(readTensor(t, gf, "loss")[0]); math.Abs(sum/float64(n)-want) > lossTol*want {
					t.Errorf("bf16 loss = %.6f, reference %.6f", sum/float64(n), want)
				}
				grads := engine.HostView(dev, a.Grads)
				for _, s := range a.Specs {
					if e := relErr(grads[s.Offset:s.Offset+s.Size()], readTensor(t, gf, s.Name)); e > tensorTol {
						t.Errorf("bf16 grad %s: relative error %.3g > %g", s.Name, e, tensorTol)
					}
				}
			})
		}
	}
}

// A PEFT-initialised adapter (B = 0) leaves the model's logits unchanged,
// and its A entries lie within PEFT's kaiming-uniform bound 1/sqrt(in).
func TestInitPEFT(t *testing.T) {
	dev := openCPU(t)
	dir := filepath.Join("testdata", "lora", "gqa_packed")
	m, err := engine.Load(dir, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
	base := m.Logits(bt)
	a, err := engine.NewAdapter(m.Config, dev, engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: engine.LoRATargets})
	if err != nil {
		t.Fatal(err)
	}
	a.InitPEFT(7)
	if err := m.Attach(a); err != nil {
		t.Fatal(err)
	}
	if e := relErr(m.Logits(bt), base); e != 0 {
		t.Errorf("logits changed by a zero-B adapter (%g)", e)
	}
	p := engine.HostView(dev, a.Params)
	for i, s := range a.Specs {
		bound := float32(1 / math.Sqrt(float64(s.Shape[1])))
		nonzero := false
		for _, v := range p[s.Offset : s.Offset+s.Size()] {
			if i%2 == 0 && (v < -bound || v > bound) || i%2 == 1 && v != 0 {
				t.Fatalf("%s: value %g outside PEFT's initialisation", s.Name, v)
			}
			nonzero = nonzero || v != 0
		}
		if i%2 == 0 && !nonzero {
			t.Fatalf("%s: all zero", s.Name)
		}
	}
}

// PEFT's string target_modules is a regular expression matched in full
// against module names: it may pick projections per layer, and one that
// would wrap the output head or embeddings is refused.
func TestAdapterTargetRegex(t *testing.T) {
	dev := openCPU(t)
	m, err := engine.Load(filepath.Join("testdata", "lora", "gqa_packed"), dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lc := engine.LoRAConfig{Rank: 2, Alpha: 4, TargetRegex: `.*\.layers\.1\.self_attn\.(q|v)_proj`}
	a, err := engine.NewAdapter(m.Config, dev, lc)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range a.Specs {
		names = append(names, s.Name)
	}
	want := []string{
		"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight",
		"base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight", "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("regex adapter tensors %v, want %v", names, want)
	}
	a.InitPEFT(1)
	dir := t.TempDir()
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	b, err := engine.LoadAdapter(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.TargetRegex != lc.TargetRegex || len(b.Specs) != 4 {
		t.Errorf("after save and load: regex %q, %d tensors", b.Config.TargetRegex, len(b.Specs))
	}
	for _, re := range []string{`.*`, `model\.layers\.9\..*`} {
		if _, err := engine.NewAdapter(m.Config, dev, engine.LoRAConfig{Rank: 2, Alpha: 4, TargetRegex: re}); err == nil {
			t.Errorf("target regex %q accepted", re)
		}
	}
}

// layers_to_transform (a layer index or a list) restricts the adapter to
// those layers, survives save and load, and must name existing layers.
func TestAdapterLayersToTransform(t *testing.T) {
	dev := openCPU(t)
	m, err := engine.Load(filepath.Join("testdata", "lora", "gqa_packed"), dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ok := `{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "down_proj"], "layers_pattern": "layers", "layers_to_transform": `
	for _, layers := range []string{"1", "[1]"} {
		lc, err := engine.ParseAdapterConfig([]byte(ok + layers + "}"))
		if err != nil {
			t.Fatal(err)
		}
		a, err := engine.NewAdapter(m.Config, dev, lc)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Specs) != 4 || !strings.Contains(a.Specs[0].Name, ".layers.1.") || !strings.Contains(a.Specs[3].Name, ".layers.1.mlp.down_proj") {
			t.Errorf("layers_to_transform %s: tensors %v", layers, a.Specs)
		}
		dir := t.TempDir()
		if err := a.Save(dir); err != nil {
			t.Fatal(err)
		}
		if b, err := engine.LoadAdapter(dir, m); err != nil || len(b.Specs) != 4 {
			t.Errorf("layers_to_transform %s after save and load: %v", layers, err)
		}
	}
	lc, err := engine.ParseAdapterConfig([]byte(ok + "[0, 5]}"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := engine.NewAdapter(m.Config, dev, lc); err == nil || !strings.Contains(err.Error(), "layer 5") {
		t.Errorf("layer 5 of a 2-layer model: %v", err)
	}
	if _, err := engine.ParseAdapterConfig([]byte(ok + `"all"}`)); err == nil || !strings.Contains(err.Error(), "layers_to_transform") {
		t.Errorf("layers_to_transform \"all\": %v", err)
	}
}

// An adapter directory holding only the pickle format is refused with how to convert it.
func TestLoadAdapterBin(t *testing.T) {
	dev := openCPU(t)
	src := filepath.Join("testdata", "lora", "gqa_packed")
	m, err := engine.Load(src, dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	raw, _ := os.ReadFile(filepath.Join(src, "adapter", engine.AdapterConfigFile))
	os.WriteFile(filepath.Join(dir, engine.AdapterConfigFile), raw, 0o644)
	os.WriteFile(filepath.Join(dir, "adapter_model.bin"), []byte("PK"), 0o644)
	if _, err := engine.LoadAdapter(dir, m); err == nil || !strings.Contains(err.Error(), "safe_serialization") {
		t.Errorf("adapter_model.bin: %v", err)
	}
}
