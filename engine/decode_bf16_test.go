package engine_test

import (
	"math"
	"path/filepath"
	"testing"

	"hone/engine"
)

// With DecodeBF16 the decoder reads bf16 weights: its logits equal a full
// fp32 forward pass over the weights rounded to bf16 (and differ from the
// unrounded model's), whether tokens come as a prompt or one at a time; and
// batched decode steps equal decoding alone, on every device.
func TestDecodeBF16MatchesRoundedWeights(t *testing.T) {
	for _, devName := range parityDevices {
		for _, name := range []string{"gqa", "tied_llama3", "bias_packed", "mistral"} {
			t.Run(devName+"/"+name, func(t *testing.T) {
				dev := openDevice(t, devName)
				dir := filepath.Join("testdata", "parity", name)
				m, err := engine.Load(dir, dev, engine.Options{DecodeBF16: true})
				if err != nil {
					t.Fatal(err)
				}
				rounded, err := engine.Load(dir, dev, engine.Options{})
				if err != nil {
					t.Fatal(err)
				}
				// Decoding gathers fp32 embeddings: round them in both models,
				// so tied output heads read the same values in both.
				roundParams(m, m.Params.Embed)
				roundParams(rounded, append(matrices(rounded), rounded.Params.Embed)...)
				bt := readBatch(t, filepath.Join(dir, "batch.json"), m.Config.VocabSize)
				T, V := bt.T, m.Config.VocabSize
				ids := make([]int, T)
				for i := range ids {
					ids[i] = int(bt.IDs[i])
				}
				one := &engine.Batch{B: 1, T: T, IDs: bt.IDs[:T], Targets: make([]int32, T), Pos: seq(T), DocStart: make([]int32, T)}
				want, unrounded := rounded.Logits(one), m.Logits(one)
				dec, err := m.NewDecoder(T)
				if err != nil {
					t.Fatal(err)
				}
				const prompt = 5
				got, err := dec.Append(ids[:prompt])
				for pos := prompt - 1; err == nil; pos++ {
					ref := want[pos*V : (pos+1)*V]
					if e := relErr(got, ref); e > 1e-5 {
						t.Errorf("position %d: relative error %.3g against the rounded weights' forward pass", pos, e)
					}
					if e := relErr(unrounded[pos*V:(pos+1)*V], ref); e < 1e-4 {
						t.Fatalf("position %d: rounding the weights changes the logits by only %.3g: the test cannot tell fp32 from bf16 weights", pos, e)
					}
					if pos+1 == T {
						break
					}
					got, err = dec.Append(ids[pos+1 : pos+2])
				}
				if err != nil {
					t.Fatal(err)
				}
				dec.Close()
				// Batched steps against decoding alone, and the full forward
				// pass, on a model whose fp32 weights are already bf16 values.
				roundParams(m, matrices(m)...)
				checkDecodeStep(t, m)
				m.Close()
				rounded.Close()
				if ref, ok := dev.(interface{ Live() int }); ok && ref.Live() != 0 {
					t.Errorf("%d buffers live after Close", ref.Live())
				}
			})
		}
	}
}

// roundParams rounds the fp32 weights xs (views of m.Params) to bf16
// values, nearest even.
func roundParams(m *engine.Model, xs ...[]float32) {
	for _, x := range xs {
		host := make([]float32, len(x))
		m.Dev.Download(host, x)
		for i, v := range host {
			u := math.Float32bits(v)
			host[i] = math.Float32frombits((u + 0x7fff + (u>>16)&1) &^ 0xffff)
		}
		m.Dev.Upload(x, host)
	}
	m.ParamsChanged()
}

// matrices are the weights decoding reads in bf16: the layers' projections
// and the output head.
func matrices(m *engine.Model) [][]float32 {
	xs := [][]float32{m.Params.LMHead}
	for _, p := range m.Params.Layers {
		xs = append(xs, p.WQ, p.WK, p.WV, p.WO, p.WGate, p.WUp, p.WDown)
	}
	return xs
}
