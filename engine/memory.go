package engine

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// MemoryEstimate returns the bytes a training model of this config needs on
// dev for micro-batches of B rows of T tokens: parameters, gradients and
// AdamW moments (fp32), the bf16 weight copy in BF16 mode, activations, the
// batch, and the device's own attention scratch. It lets a run refuse at
// start-up instead of running out of memory on its first long batch an
// hour in. TestMemoryEstimateMatchesAllocations holds it to what a
// counting device sees allocated.
func (c *Config) MemoryEstimate(dev Device, opt Options, B, T int) int64 {
	P := c.NumParams()
	bytes := 4 * P * 4 // params, grads, m, v
	if opt.BF16 && !opt.CompactBF16 {
		bytes += 2 * P
	} else if opt.BF16 {
		lo, hi := c.layerRange(0)
		bytes += 2 * (int64(c.VocabSize*c.HiddenSize) + int64(hi-lo))
	}
	N := int64(B * T)
	C, F, QD, KVD, V := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.QDim()), int64(c.KVDim()), int64(c.VocabSize)
	L, NH := int64(c.NumHiddenLayers), int64(c.NumAttentionHeads)
	NK := int64(c.routedRows(B * T))             // rows of the MLP's activations: only routed experts' with MoE
	perLayer := N*(3*C+2*QD+2*KVD+2+NH) + 3*NK*F // ln1, mid, ln2; q, att; k, v; rstd1, rstd2; lse; gate, up, h
	layers := L
	if opt.Recompute {
		layers = 1
	}
	chunk := int64(opt.LossChunk)
	if chunk <= 0 {
		chunk = 256
	}
	chunk = min(chunk, N)
	floats := layers*perLayer + (L+1)*N*C + N*(C+1) + chunk*V + N*(2*C+2*QD+2*KVD) + 3*NK*F
	floats += int64(T) * int64(c.HeadDim) // rotary tables (T, HD/2) × 2
	ints := 4 * N                         // the batch: ids, targets, positions, document starts
	if c.MoE() {
		E := int64(c.NumLocalExperts)
		floats += layers*NK*(1+C) + 2*NK*C + N*E + NK // per layer wt, y; scratch xg, dxg, router logits, dwt
		ints += layers * NK                           // per layer routed token ids
	}
	bytes += 4*floats + 4*ints + dev.AttentionScratch(B, T, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim)
	if opt.BF16 {
		bytes += 2 * 2 * int64(c.bf16Scratch(B*T, int(chunk)))
	}
	return bytes
}

// Reserve allocates every activation buffer for micro-batches of B rows of
// T tokens now, so memory problems show at start-up.
func (m *Model) Reserve(B, T int) { m.ensure(B, T) }

// Fit adjusts opts so that training micro-batches of B rows of T tokens on
// dev fits in avail bytes (0: the machine's MemAvailable), keeping 10% and at least
// 2 GiB for everything else on the machine. It
// turns on the cheapest savings first, activation recomputation and then
// per-layer bf16 weights, and says what it turned on. When nothing fits it
// fails with the numbers, before anything is allocated.
func (c *Config) Fit(dev Device, opts Options, B, T int, avail int64) (Options, []string, error) {
	if avail <= 0 {
		if avail = MemAvailable(); avail <= 0 {
			return opts, nil, nil
		}
	}
	limit := min(avail/10*9, avail-2<<30)
	need := c.MemoryEstimate(dev, opts, B, T)
	if need <= limit {
		return opts, nil, nil
	}
	var notes []string
	for _, try := range []struct {
		what  string
		apply func(*Options) bool
	}{
		{"activation recomputation", func(o *Options) bool { r := !o.Recompute; o.Recompute = true; return r }},
		{"per-layer bf16 weights", func(o *Options) bool { r := o.BF16 && !o.CompactBF16; o.CompactBF16 = true; return r }},
	} {
		if !try.apply(&opts) {
			continue
		}
		notes = append(notes, fmt.Sprintf("turned on %s: %.1f GiB needed without it, %.1f GiB available", try.what, gib(need), gib(avail)))
		if need = c.MemoryEstimate(dev, opts, B, T); need <= limit {
			return opts, notes, nil
		}
	}
	return opts, notes, fmt.Errorf("not enough memory: training needs about %.1f GiB (%d rows × %d tokens, %d parameters) and %.1f GiB is available; use shorter rows, fewer rows per micro-batch, or a smaller model",
		gib(need), B, T, c.NumParams(), gib(avail))
}

func gib(b int64) float64 { return float64(b) / (1 << 30) }

// MemAvailable reads MemAvailable from /proc/meminfo (0 when unknown).
func MemAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}
