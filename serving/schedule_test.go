package serving

import (
	"testing"
	"time"

	"hone/engine"
	"hone/engine/cpu"
	"hone/generate"
)

// Every turn advances every running stream by one token, however many
// long prompts are being read; while streams decode, a turn reads as many
// prompt chunks as the measured cost fits in turnTarget (one when chunks
// are slow, so the streams' gap is one chunk's time; more when they are
// fast), and with none decoding the most. The clock is fake: each reading
// advances it by tick.
func TestTurnsAdvanceRunningStreams(t *testing.T) {
	m, err := engine.Load("../engine/testdata/parity/tied_llama3", cpu.New(0), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tc := range []struct {
		tick       time.Duration
		wantChunks int // prompt chunks a measured turn with decoding streams reads
	}{{time.Second, 1}, {time.Millisecond, 3}} {
		var now time.Time
		b := &batcher{maxBatch: 8, maxQueue: 8, running: true, now: func() time.Time { now = now.Add(tc.tick); return now }}
		prompt := func(n int) []int {
			p := make([]int, n)
			for i := range p {
				p[i] = 1 + i%40
			}
			return p
		}
		var short, long []*slot
		for range 2 {
			short = append(short, newSlot(m, prompt(4), generate.Params{MaxNewTokens: 30}))
		}
		for range 3 {
			long = append(long, newSlot(m, prompt(5*prefillChunk+10), generate.Params{MaxNewTokens: 1}))
		}
		b.incoming, b.queued = append(append([]*slot(nil), short...), long...), 5
		var fedMax, turns int
		for b.admit() {
			before := map[*slot]int{}
			for _, s := range b.active {
				if !s.over && s.seq != nil && !s.seq.Prefilling() {
					before[s] = len(s.toks)
				}
			}
			measured := b.perToken > 0
			b.step()
			turns++
			for s, n := range before {
				if len(s.toks) != n+1 {
					t.Fatalf("tick %v, turn %d: a running stream went from %d to %d tokens", tc.tick, turns, n, len(s.toks))
				}
			}
			switch {
			case len(before) == 0 && b.turnFed > maxPrefillBudget:
				t.Errorf("tick %v, turn %d: read %d prompt tokens, more than %d", tc.tick, turns, b.turnFed, maxPrefillBudget)
			case len(before) > 0 && measured:
				if b.turnFed > tc.wantChunks*prefillChunk {
					t.Errorf("tick %v, turn %d: read %d prompt tokens while streams decode, want at most %d chunks", tc.tick, turns, b.turnFed, tc.wantChunks)
				}
				fedMax = max(fedMax, b.turnFed)
			}
		}
		if fedMax <= (tc.wantChunks-1)*prefillChunk {
			t.Errorf("tick %v: at most %d prompt tokens a turn while streams decoded, want %d chunks", tc.tick, fedMax, tc.wantChunks)
		}
		for _, s := range short {
			if len(s.toks) != 30 || s.err != nil {
				t.Errorf("tick %v: a short request made %d tokens (%v), want 30", tc.tick, len(s.toks), s.err)
			}
		}
		for _, s := range long {
			if len(s.toks) != 1 || s.err != nil {
				t.Errorf("tick %v: a long prompt made %d tokens (%v), want 1", tc.tick, len(s.toks), s.err)
			}
		}
	}
}
