package engine_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"hone/engine"
	"hone/safetensors"
)

// nf4DecConfig has whole NF4 blocks in every row (hidden and intermediate
// sizes multiples of 64), so the device's kernel multiplies every matrix;
// gqa_packed's rows of 32 take the Go kernel, rows starting inside blocks.
const nf4DecConfig = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 300, "hidden_size": 128,
	"intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
	"rms_norm_eps": 1e-5, "rope_theta": 10000, "max_position_embeddings": 64, "attention_bias": true}`

// A decoder on an NF4 base with an adapter attached (fp32 mode, with and
// without NF4 embeddings and head) computes what the ordinary fp32
// decoder computes on the weights the NF4 base computes with (its
// DequantizedTensors, what hone dev dequantize writes) with the same
// adapter: a 20-token prompt (prefill, dequantized bands), 3 tokens at
// once, then single tokens (the NF4 kernels), each within 1e-5 of the
// largest logit; in BF16 mode (bf16 embeddings and head) within 1e-2.
// Decoding keeps no dequantized weights: the weights held are the same
// before and after.
func TestNF4DecodeMatchesDequantizedModel(t *testing.T) {
	random := t.TempDir()
	writeRandomModel(t, random, nf4DecConfig)
	for _, src := range []string{filepath.Join("testdata", "lora", "gqa_packed"), random} {
		for _, emb := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/embeddings=%v", filepath.Base(src), emb), func(t *testing.T) { checkNF4Decode(t, src, emb) })
		}
	}
}

func checkNF4Decode(t *testing.T, src string, emb bool) {
	dev := openCPU(t)
	q, err := engine.Load(src, dev, engine.Options{QuantizeBase: "nf4", NF4Embeddings: emb})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ref, err := engine.Load(writeDequantized(t, q, src), dev, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	for _, m := range []*engine.Model{q, ref} {
		if err := m.Attach(testAdapter(t, m, src)); err != nil {
			t.Fatal(err)
		}
	}
	held := q.HeldWeightBytes()
	if want := ref.HeldWeightBytes(); held > want/2 {
		t.Errorf("the NF4 base holds %d bytes of weights, the fp32 model %d", held, want)
	}
	const T = 30
	r := rand.New(rand.NewPCG(1, 2))
	ids := make([]int, T)
	for i := range ids {
		ids[i] = r.IntN(q.Config.VocabSize)
	}
	// BF16 mode (a QLoRA run's) decodes the same NF4 matrices with the
	// embeddings and head in bf16: within bf16's rounding.
	q16, err := engine.Load(src, dev, engine.Options{QuantizeBase: "nf4", BF16: true, NF4Embeddings: emb})
	if err != nil {
		t.Fatal(err)
	}
	defer q16.Close()
	if err := q16.Attach(testAdapter(t, q16, src)); err != nil {
		t.Fatal(err)
	}
	var decs [3]*engine.Decoder
	for i, m := range []*engine.Model{q, ref, q16} {
		if decs[i], err = m.NewDecoder(T); err != nil {
			t.Fatal(err)
		}
		defer decs[i].Close()
	}
	for pos := 0; pos < T; {
		n := 1
		switch pos {
		case 0:
			n = 20
		case 20:
			n = 3
		}
		got, err := decs[0].Append(ids[pos : pos+n])
		if err != nil {
			t.Fatal(err)
		}
		want, err := decs[1].Append(ids[pos : pos+n])
		if err != nil {
			t.Fatal(err)
		}
		if e := relErr(got, want); e > 1e-5 {
			t.Errorf("after token %d: logits off by %.3g of the largest against the fp32 decoder on the dequantized weights", pos+n-1, e)
		}
		got16, err := decs[2].Append(ids[pos : pos+n])
		if err != nil {
			t.Fatal(err)
		}
		if e := relErr(got16, want); e > 1e-2 {
			t.Errorf("BF16 mode, after token %d: logits off by %.3g of the largest", pos+n-1, e)
		}
		pos += n
	}
	if after := q.HeldWeightBytes(); after != held {
		t.Errorf("decoding changed the weights held from %d to %d bytes", held, after)
	}
}

// writeRandomModel writes a model of config cfg with random weights to dir.
func writeRandomModel(t *testing.T, dir, cfg string) {
	t.Helper()
	c, err := engine.ParseConfig([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	m := engine.New(c, openCPU(t), engine.Options{})
	defer m.Close()
	m.InitRandom(3)
	host := engine.HostView(m.Dev, m.Params.Arena)
	r := rand.New(rand.NewPCG(4, 5))
	for i := range host { // norms and biases away from 1 and 0 too
		host[i] += float32(0.05 * r.NormFloat64())
	}
	if err := m.Save(dir, engine.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
}

// writeDequantized writes NF4 base q's DequantizedTensors, with src's
// config, to a new directory.
func writeDequantized(t *testing.T, q *engine.Model, src string) string {
	t.Helper()
	tensors, err := q.DequantizedTensors()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	raw, err := os.ReadFile(filepath.Join(src, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), tensors, safetensors.F32, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testAdapter is src's adapter when it has one, else a rank-4 adapter on
// every projection with random (non-zero) A and B, the same for every
// model of src's config.
func testAdapter(t *testing.T, m *engine.Model, src string) *engine.Adapter {
	t.Helper()
	dir := filepath.Join(src, "adapter")
	if _, err := os.Stat(dir); err == nil {
		a, err := engine.LoadAdapter(dir, m)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a, err := engine.NewAdapter(m.Config, m.Dev, engine.LoRAConfig{Rank: 4, Alpha: 8, Targets: engine.LoRATargets})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(6, 7))
	p := engine.HostView(m.Dev, a.Params)
	for i := range p {
		p[i] = float32(0.1 * r.NormFloat64())
	}
	return a
}
