package engine_test

import (
	"math/rand/v2"
	"path/filepath"
	"testing"

	"hone/engine"
)

// One batched decode step gives each sequence the logits it gets decoding
// alone, whatever the sequences' lengths, as sequences join and leave the
// batch, across the cache's growth past a block (tied_llama3 allows 512
// positions), on every device; every buffer is freed after.
func TestDecodeStepMatchesAlone(t *testing.T) {
	for _, devName := range parityDevices {
		for _, name := range []string{"gqa", "tied_llama3", "bias_packed", "mistral", "mixtral", "mixtral_aux", "dbrx", "dbrx_p2"} {
			t.Run(devName+"/"+name, func(t *testing.T) {
				dev := openDevice(t, devName)
				m, err := engine.Load(filepath.Join("testdata", "parity", name), dev, engine.Options{})
				if err != nil {
					t.Fatal(err)
				}
				checkDecodeStep(t, m)
				m.Close()
				if ref, ok := dev.(interface{ Live() int }); ok && ref.Live() != 0 {
					t.Errorf("%d buffers live after Close", ref.Live())
				}
			})
		}
	}
}

// stream is one sequence decoded twice: in the batch and alone.
type stream struct {
	batched, alone *engine.Decoder
	ids            []int // every token fed so far
	next           int
}

func checkDecodeStep(t *testing.T, m *engine.Model) {
	V, maxPos := m.Config.VocabSize, m.Config.MaxPositionEmbeddings
	r := rand.New(rand.NewPCG(1, 2))
	start := func(prompt int) *stream {
		s := &stream{}
		ids := make([]int, prompt)
		for i := range ids {
			ids[i] = r.IntN(V)
		}
		for _, d := range []**engine.Decoder{&s.batched, &s.alone} {
			dec, err := m.NewDecoder(maxPos)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dec.Append(ids); err != nil {
				t.Fatal(err)
			}
			*d = dec
		}
		s.ids, s.next = ids, r.IntN(V)
		return s
	}
	// A long prompt crosses the 256-token block when the context allows.
	long := min(250, maxPos-40)
	run := []*stream{start(3), start(long), start(1)}
	for step := 0; step < 30; step++ {
		switch step {
		case 8: // one leaves, one joins
			run[1].batched.Close()
			run[1].alone.Close()
			run = append(run[:1:1], run[2], start(5))
		case 20:
			run = append(run, start(2))
		}
		decs, toks := make([]*engine.Decoder, len(run)), make([]int, len(run))
		for i, s := range run {
			decs[i], toks[i] = s.batched, s.next
		}
		got, err := engine.DecodeStep(decs, toks)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range run {
			want, err := s.alone.Append([]int{s.next})
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(got[i], want); e > 1e-5 {
				t.Fatalf("step %d, sequence %d (length %d): relative error %.3g", step, i, s.alone.Len(), e)
			}
			if s.batched.Len() != s.alone.Len() {
				t.Fatalf("step %d: batched length %d, alone %d", step, s.batched.Len(), s.alone.Len())
			}
			s.ids = append(s.ids, s.next)
			s.next = r.IntN(V)
			if step == 7 && i == 1 {
				checkFullForward(t, m, s.ids, want)
			}
		}
	}
	if _, err := engine.DecodeStep([]*engine.Decoder{run[0].batched, run[0].batched}, []int{1, 2}); err == nil {
		t.Error("DecodeStep with one decoder twice succeeded")
	}
	if _, err := engine.DecodeStep([]*engine.Decoder{run[0].batched}, []int{V}); err == nil {
		t.Error("DecodeStep with a token outside the vocabulary succeeded")
	}
	for _, s := range run {
		s.batched.Close()
		s.alone.Close()
	}
}

// checkFullForward compares the logits after ids with a full forward pass,
// which shares no cache code with the decoders.
func checkFullForward(t *testing.T, m *engine.Model, ids []int, got []float32) {
	T, V := len(ids), m.Config.VocabSize
	bt := &engine.Batch{B: 1, T: T, IDs: make([]int32, T), Targets: make([]int32, T), Pos: seq(T), DocStart: make([]int32, T)}
	for i, id := range ids {
		bt.IDs[i] = int32(id)
	}
	full := m.Logits(bt)
	if e := relErr(got, full[(T-1)*V:]); e > 1e-5 {
		t.Fatalf("decoder logits after %d tokens differ from the full forward pass: relative error %.3g", T, e)
	}
}

// Extend with feeds of different lengths in one pass (prompt chunks of
// several sequences beside single decode tokens) gives each sequence the
// logits it gets appending its feed alone, on every device; feeds past a
// decoder's capacity or empty are refused.
func TestExtendMixedFeedsMatchAlone(t *testing.T) {
	for _, devName := range parityDevices {
		t.Run(devName, func(t *testing.T) {
			m, err := engine.Load(filepath.Join("testdata", "parity", "gqa"), openDevice(t, devName), engine.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			V := m.Config.VocabSize
			r := rand.New(rand.NewPCG(5, 6))
			const n = 4
			together, alone := make([]*engine.Decoder, n), make([]*engine.Decoder, n)
			for i := range n {
				for _, d := range []*[]*engine.Decoder{&together, &alone} {
					if (*d)[i], err = m.NewDecoder(64); err != nil {
						t.Fatal(err)
					}
					defer (*d)[i].Close()
				}
			}
			// Round by round, sequence i feeds lens[round][i] tokens.
			for round, lens := range [][n]int{{7, 1, 12, 3}, {1, 9, 1, 1}, {1, 1, 5, 2}, {4, 1, 1, 1}} {
				feeds := make([][]int, n)
				for i, k := range lens {
					for range k {
						feeds[i] = append(feeds[i], r.IntN(V))
					}
				}
				got, err := engine.Extend(together, feeds)
				if err != nil {
					t.Fatal(err)
				}
				for i := range n {
					want, err := alone[i].Append(feeds[i])
					if err != nil {
						t.Fatal(err)
					}
					if e := relErr(got[i], want); e > 1e-5 {
						t.Fatalf("round %d, sequence %d (%d tokens fed): relative error %.3g", round, i, lens[i], e)
					}
					if together[i].Len() != alone[i].Len() {
						t.Fatalf("round %d, sequence %d: length %d together, %d alone", round, i, together[i].Len(), alone[i].Len())
					}
				}
			}
			if _, err := engine.Extend(together[:1], [][]int{make([]int, 64)}); err == nil {
				t.Error("Extend past the capacity succeeded")
			}
			if _, err := engine.Extend(together[:2], [][]int{{1}, nil}); err == nil {
				t.Error("Extend with an empty feed succeeded")
			}
		})
	}
}
