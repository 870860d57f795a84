package cpu

import (
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"

	"hone/engine"
)

// TestTrainShapeRates (HONE_SHAPES=1) times the bf16 products of one 125M
// training step (seq 256, batch 4) shape by shape, rounds interleaved and
// the fastest run kept, so a loaded machine still gives comparable rates.
func TestTrainShapeRates(t *testing.T) {
	if os.Getenv("HONE_SHAPES") == "" {
		t.Skip("set HONE_SHAPES=1")
	}
	d := New(0)
	type sh struct {
		name    string
		m, n, k int
		f       engine.MatMulFlags
	}
	tb, no, ta := engine.MatMulFlags{TransB: true}, engine.MatMulFlags{}, engine.MatMulFlags{TransA: true, Acc: true}
	shapes := []sh{
		{"ceil", 2048, 2048, 2048, no},
		{"fq", 1024, 768, 768, tb}, {"fkv", 1024, 256, 768, tb}, {"fqkv", 1024, 1280, 768, tb},
		{"fgate", 1024, 2048, 768, tb}, {"fgu", 1024, 4096, 768, tb}, {"fdown", 1024, 768, 2048, engine.MatMulFlags{TransB: true, Acc: true}},
		{"dxdown", 1024, 2048, 768, no}, {"dxgate", 1024, 768, 2048, no}, {"dxgu", 1024, 768, 4096, no}, {"dxq", 1024, 768, 768, no}, {"dxkv", 1024, 768, 256, no}, {"dxqkv", 1024, 768, 1280, no},
		{"dwdown", 768, 2048, 1024, ta}, {"dwgate", 2048, 768, 1024, ta}, {"dwgu", 4096, 768, 1024, ta}, {"dwq", 768, 768, 1024, ta}, {"dwkv", 256, 768, 1024, ta}, {"dwqkv", 1280, 768, 1024, ta},
		{"hf256", 256, 32000, 768, tb}, {"hdx256", 256, 768, 32000, no}, {"hdw256", 32000, 768, 256, ta},
		{"hf1024", 1024, 32000, 768, tb}, {"hdx1024", 1024, 768, 32000, no}, {"hdw1024", 32000, 768, 1024, ta},
	}
	type buf struct {
		a, w []uint16
		c    []float32
	}
	bufs := make([]buf, len(shapes))
	best := make([]time.Duration, len(shapes))
	for i, s := range shapes {
		bufs[i] = buf{make([]uint16, s.m*s.k), make([]uint16, s.n*s.k), make([]float32, s.m*s.n)}
		for j := range bufs[i].a {
			bufs[i].a[j] = 0x3f80 + uint16(j%7)
		}
		for j := range bufs[i].w {
			bufs[i].w[j] = 0x3f00 + uint16(j%5)
		}
		d.MatMulBF16(bufs[i].c, bufs[i].a, bufs[i].w, s.m, s.n, s.k, s.f)
	}
	for r := 0; r < 8; r++ {
		for i, s := range shapes {
			st := cpuTime()
			d.MatMulBF16(bufs[i].c, bufs[i].a, bufs[i].w, s.m, s.n, s.k, s.f)
			if e := cpuTime() - st; best[i] == 0 || e < best[i] {
				best[i] = e
			}
		}
	}
	for i, s := range shapes {
		t.Logf("%-8s %5dx%5dx%5d %8.2f cpu-ms %7.0f GFLOP/cpu-s", s.name, s.m, s.n, s.k, best[i].Seconds()*1e3, 2*float64(s.m*s.n*s.k)/best[i].Seconds()/1e9)
	}
}

// cpuTime is the process's user+system CPU time: on a loaded machine it
// counts only the time this process ran.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestAttentionCPUTime (HONE_SHAPES=1) reports the fastest CPU time of the
// bf16 attention forward and backward at the 125M bench shapes (seq 256 ×
// batch 4) and at one 8192-token row, with the causal products' rate per
// CPU second (2·nh·hd·T² per row forward, 2.5 times that back).
func TestAttentionCPUTime(t *testing.T) {
	if os.Getenv("HONE_SHAPES") == "" {
		t.Skip("set HONE_SHAPES=1")
	}
	for _, c := range []struct{ B, T, reps int }{{benchB, benchT, 30}, {1, 8192, 3}} {
		d, r := New(0), rand.New(rand.NewPCG(1, 1))
		n := c.B * c.T
		q, k, v := randSlice(r, n*benchNH*benchHD), randSlice(r, n*benchKV*benchHD), randSlice(r, n*benchKV*benchHD)
		out, lse, ds := make([]float32, len(q)), make([]float32, c.B*benchNH*c.T), make([]int32, n)
		dout := randSlice(r, len(q))
		dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
		var fwd, bwd time.Duration
		for i := 0; i < c.reps; i++ {
			st := cpuTime()
			d.AttentionBF16(out, lse, q, k, v, ds, c.B, c.T, benchNH, benchKV, benchHD, 0)
			if e := cpuTime() - st; fwd == 0 || e < fwd {
				fwd = e
			}
			st = cpuTime()
			d.AttentionBackwardBF16(dq, dk, dv, dout, out, lse, q, k, v, ds, c.B, c.T, benchNH, benchKV, benchHD, 0)
			if e := cpuTime() - st; bwd == 0 || e < bwd {
				bwd = e
			}
		}
		fl := 2 * float64(c.B*benchNH*benchHD) * float64(c.T) * float64(c.T)
		t.Logf("attention bf16 B%d T%d: forward %.3f cpu-ms (%.0f GFLOP/cpu-s), backward %.3f cpu-ms (%.0f GFLOP/cpu-s)", c.B, c.T,
			fwd.Seconds()*1e3, fl/fwd.Seconds()/1e9, bwd.Seconds()*1e3, 2.5*fl/bwd.Seconds()/1e9)
	}
}
