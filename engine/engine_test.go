package engine_test

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"hone/engine"
	_ "hone/engine/cpu"
	"hone/safetensors"
)

// Finite differences in float64 arithmetic on top of float32 kernels are
// noisy, so the check uses a large step on a few coordinates with large
// gradients and a loose tolerance; the fixtures are the tight check.
func TestFiniteDifferences(t *testing.T) {
	dir := filepath.Join("testdata", "parity", "bias_packed")
	m, err := engine.Load(dir, openCPU(t), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
	n := bt.Scored()
	m.ZeroGrad()
	m.ForwardBackward(bt, 1/float32(n))
	grads := append([]float32(nil), m.Grads.Arena...)
	loss := func() float64 { e := m.Evaluate(bt); return e.LossSum / float64(e.Tokens) }
	for _, s := range m.Config.ParamSpecs() {
		// The coordinate with the largest gradient in each tensor.
		best := s.Offset
		for i := s.Offset; i < s.Offset+s.Size(); i++ {
			if math.Abs(float64(grads[i])) > math.Abs(float64(grads[best])) {
				best = i
			}
		}
		const h = 1e-2
		p := m.Params.Arena[best]
		m.Params.Arena[best] = p + h
		up := loss()
		m.Params.Arena[best] = p - h
		down := loss()
		m.Params.Arena[best] = p
		fd := (up - down) / (2 * h)
		if g := float64(grads[best]); math.Abs(fd-g) > 2e-2*math.Abs(g)+1e-4 {
			t.Errorf("%s[%d]: analytic gradient %.6g, finite difference %.6g", s.Name, best-s.Offset, g, fd)
		}
	}
}

// Gradients accumulated over micro-batches with scale 1/(tokens of the whole
// step) equal the gradients of the whole batch at once (per-token mean, not
// a mean of means), even when the micro-batches score different numbers of
// tokens.
func TestGradientAccumulation(t *testing.T) {
	dir := filepath.Join("testdata", "parity", "gqa")
	m, err := engine.Load(dir, openCPU(t), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	whole := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
	total := whole.Scored()
	m.ZeroGrad()
	wantSum, _ := m.ForwardBackward(whole, 1/float32(total))
	want := append([]float32(nil), m.Grads.Arena...)

	m.ZeroGrad()
	var sum float64
	var counts []int
	for r := 0; r < whole.B; r++ {
		row := &engine.Batch{B: 1, T: whole.T}
		sl := func(x []int32) []int32 { return x[r*whole.T : (r+1)*whole.T] }
		row.IDs, row.Targets, row.Pos, row.DocStart = sl(whole.IDs), sl(whole.Targets), sl(whole.Pos), sl(whole.DocStart)
		s, c := m.ForwardBackward(row, 1/float32(total))
		sum += s
		counts = append(counts, c)
	}
	if counts[0] == counts[1] {
		t.Fatalf("fixture rows score the same number of tokens (%v); the test needs them to differ", counts)
	}
	if math.Abs(sum-wantSum) > 1e-5*wantSum {
		t.Errorf("accumulated loss sum %v, whole batch %v", sum, wantSum)
	}
	if e := relErr(m.Grads.Arena, want); e > 1e-5 {
		t.Errorf("accumulated gradients differ from the whole batch's: relative error %.3g", e)
	}
}

func TestSaveLoadBitExact(t *testing.T) {
	src := filepath.Join("testdata", "parity", "tied_llama3")
	m, err := engine.Load(src, openCPU(t), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, dt := range []safetensors.DType{safetensors.F32, safetensors.BF16} {
		out := filepath.Join(t.TempDir(), "model")
		if err := m.Save(out, engine.SaveOptions{DType: dt, SourceDir: src, MaxShardBytes: 20000}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(out, "model.safetensors.index.json")); err != nil {
			t.Errorf("save with a small shard limit wrote no index: %v", err)
		}
		back, err := engine.Load(out, openCPU(t), engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range m.Params.Arena {
			want := v
			if dt == safetensors.BF16 {
				want = safetensors.BF16ToFloat32(safetensors.Float32ToBF16(v))
			}
			if math.Float32bits(back.Params.Arena[i]) != math.Float32bits(want) {
				t.Fatalf("%s: parameter %d = %v after save/load, want %v", dt, i, back.Params.Arena[i], want)
			}
		}
		// A second save of the loaded bf16 model reproduces the same bytes.
		if dt == safetensors.BF16 {
			again := filepath.Join(t.TempDir(), "again")
			if err := back.Save(again, engine.SaveOptions{SourceDir: out, MaxShardBytes: 20000}); err != nil {
				t.Fatal(err)
			}
			shards, _ := filepath.Glob(filepath.Join(out, "model-*.safetensors"))
			if len(shards) < 2 {
				t.Fatalf("want several shards, got %v", shards)
			}
			for _, p := range shards {
				a, _ := os.ReadFile(p)
				b, _ := os.ReadFile(filepath.Join(again, filepath.Base(p)))
				if string(a) != string(b) {
					t.Errorf("re-saving a loaded bf16 model changed %s", filepath.Base(p))
				}
			}
		}
	}
}

func TestLoadErrors(t *testing.T) {
	src := filepath.Join("testdata", "parity", "gqa")
	copyDir := func(t *testing.T) string {
		dir := t.TempDir()
		for _, f := range []string{"config.json", "model.safetensors"} {
			b, err := os.ReadFile(filepath.Join(src, f))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, f), b, 0o644)
		}
		return dir
	}
	cases := []struct {
		name   string
		mutate func(t *testing.T, dir string)
		want   []string
	}{
		{"corrupt header", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			copy(b[8:], "{garbage")
			os.WriteFile(p, b, 0o644)
		}, []string{"model.safetensors"}},
		{"truncated file", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-100], 0o644)
		}, []string{"model.safetensors", "truncated"}},
		{"header length past end", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			binary.LittleEndian.PutUint64(b, uint64(len(b)*2))
			os.WriteFile(p, b, 0o644)
		}, []string{"model.safetensors"}},
		{"wrong dtype", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors")
			b, _ := os.ReadFile(p)
			n := binary.LittleEndian.Uint64(b)
			h := strings.Replace(string(b[8:8+n]), `"model.norm.weight":{"dtype":"F32"`, `"model.norm.weight":{"dtype":"I32"`, 1)
			copy(b[8:], h)
			os.WriteFile(p, b, 0o644)
		}, []string{"model.norm.weight", "I32"}},
		{"shape mismatch", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "config.json")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"intermediate_size": 64`, `"intermediate_size": 65`, 1)), 0o644)
		}, []string{"model.layers.0.mlp.gate_proj.weight", "shape"}},
		{"missing tensor", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "config.json")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"num_hidden_layers": 2`, `"num_hidden_layers": 3`, 1)), 0o644)
		}, []string{"model.layers.2.", "missing"}},
		{"moe config", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "config.json")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"vocab_size"`, `"num_local_experts": 8, "vocab_size"`, 1)), 0o644)
		}, []string{"num_local_experts", "mixture-of-experts"}},
		{"unknown rope scaling", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "config.json")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"rope_scaling": null`, `"rope_scaling": {"rope_type": "yarn", "factor": 4}`, 1)), 0o644)
		}, []string{"rope_scaling", "yarn"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t)
			tc.mutate(t, dir)
			_, err := engine.Load(dir, openCPU(t), engine.Options{})
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := engine.ParseConfig([]byte(`{"model_type":"mixtral"}`)); !errors.Is(err, engine.ErrUnsupported) {
		t.Errorf("ParseConfig(mixtral) = %v, want ErrUnsupported", err)
	}
}

// Decoding with the key/value cache gives the logits of a full forward pass
// at every position, whether tokens arrive as a prompt or one by one, on
// every device; closing the decoder and the model frees every buffer.
func TestDecoderMatchesFullForward(t *testing.T) {
	for _, devName := range parityDevices {
		for _, name := range []string{"gqa", "tied_llama3", "bias_packed", "mistral", "mixtral", "mixtral_aux", "dbrx", "dbrx_p2"} {
			dev := openDevice(t, devName)
			dir := filepath.Join("testdata", "parity", name)
			m, err := engine.Load(dir, dev, engine.Options{})
			if err != nil {
				t.Fatal(err)
			}
			bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
			ids := make([]int, bt.T)
			for i := range ids {
				ids[i] = int(bt.IDs[i])
			}
			full := m.Logits(&engine.Batch{B: 1, T: bt.T, IDs: bt.IDs[:bt.T], Targets: make([]int32, bt.T),
				Pos: seq(bt.T), DocStart: make([]int32, bt.T)})
			V := m.Config.VocabSize
			dec, err := m.NewDecoder(bt.T)
			if err != nil {
				t.Fatal(err)
			}
			const prompt = 5
			got, err := dec.Append(ids[:prompt])
			if err != nil {
				t.Fatal(err)
			}
			for pos := prompt - 1; ; pos++ {
				if e := relErr(got, full[pos*V:(pos+1)*V]); e > 1e-5 {
					t.Errorf("%s on %s: decoder logits at position %d: relative error %.3g", name, devName, pos, e)
				}
				if pos+1 == bt.T {
					break
				}
				if got, err = dec.Append(ids[pos+1 : pos+2]); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := dec.Append(ids[:1]); err == nil {
				t.Errorf("%s: Append past the capacity succeeded", name)
			}
			dec.Close()
			m.Close()
			if ref, ok := dev.(interface{ Live() int }); ok && ref.Live() != 0 {
				t.Errorf("%s on %s: %d buffers live after Close", name, devName, ref.Live())
			}
		}
	}
}

func seq(n int) []int32 {
	s := make([]int32, n)
	for i := range s {
		s[i] = int32(i)
	}
	return s
}

// Fit turns on recomputation, then per-layer bf16 weights, only as memory
// requires, and refuses with the numbers when nothing fits. The estimates
// for Llama-3.2-1B at 1024 tokens are within 1% of the peak RSS measured
// by hone bench train (19.07 GiB fp32+recompute, 19.75 GiB bf16 compact).
func TestFit(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "bench", "configs", "llama-3.2-1b.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := engine.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	const gib = 1 << 30
	for _, tc := range []struct {
		opt                engine.Options
		avail              int64
		recompute, compact bool
		fails              bool
	}{
		{engine.Options{}, 64 * gib, false, false, false},
		{engine.Options{}, 23 * gib, true, false, false},
		{engine.Options{BF16: true}, 23 * gib, true, true, false},
		{engine.Options{BF16: true}, 12 * gib, true, true, true},
	} {
		got, notes, err := c.Fit(openCPU(t), tc.opt, 1, 1024, tc.avail)
		if (err != nil) != tc.fails || got.Recompute != tc.recompute || got.CompactBF16 != tc.compact {
			t.Errorf("Fit(%+v, %d GiB) = %+v, %v, %v", tc.opt, tc.avail/gib, got, notes, err)
		}
		if tc.fails && (err == nil || !strings.Contains(err.Error(), "not enough memory")) {
			t.Errorf("Fit error %v", err)
		}
	}
}
