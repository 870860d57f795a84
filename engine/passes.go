package engine

import (
	"fmt"
	"slices"
	"strings"
	"unsafe"
)

// Passes over parameter-sized memory. A training step is bound by memory
// traffic outside its matrix products, and the traffic that grows with the
// model is the streams over parameter-sized buffers: the weights, their
// gradients, the optimizer's moments and the bf16 weight copy. TimedDevice
// counts them: Track names such a buffer, and every call of a streaming
// kernel (ToBF16, the matrix products, Copy, Zero, SumSquares, AdamW,
// LionW) adds, per tracked buffer, the share of it that an operand
// covers. A kernel that reads and writes the same range (AdamW's p, a
// gradient product accumulating) counts it once: one pass is one stream
// through the cache hierarchy. Gathers and scatters of a few rows
// (Embedding, EmbeddingBackward) and the norm and bias vectors are not
// streams over the whole buffer and are not counted.

// trackedBuf is a buffer whose passes are counted.
type trackedBuf struct {
	name   string
	lo, hi uintptr // byte range
}

// Track names a parameter-sized buffer ([]float32 or []uint16) whose
// passes PassReport lists; a nil or empty one is ignored.
func (t *TimedDevice) Track(name string, buf any) {
	lo, hi := byteRange(buf)
	if lo == hi {
		return
	}
	t.tracked = append(t.tracked, trackedBuf{name, lo, hi})
	if t.passes == nil {
		t.passes = map[string]map[string]float64{}
	}
	t.passes[name] = map[string]float64{}
}

func byteRange(buf any) (lo, hi uintptr) {
	switch b := buf.(type) {
	case []float32:
		if len(b) > 0 {
			lo = uintptr(unsafe.Pointer(&b[0]))
			return lo, lo + 4*uintptr(len(b))
		}
	case []uint16:
		if len(b) > 0 {
			lo = uintptr(unsafe.Pointer(&b[0]))
			return lo, lo + 2*uintptr(len(b))
		}
	}
	return 0, 0
}

// touch counts the streams of kernel over ops. An operand listed twice
// (read and written in place) counts once.
func (t *TimedDevice) touch(kernel string, ops ...any) {
	if len(t.tracked) == 0 {
		return
	}
	var seen [8]uintptr
	n := 0
	for _, op := range ops {
		lo, hi := byteRange(op)
		if lo == hi || slices.Contains(seen[:n], lo) {
			continue
		}
		if n < len(seen) {
			seen[n] = lo
			n++
		}
		for _, b := range t.tracked {
			if s, e := max(lo, b.lo), min(hi, b.hi); s < e {
				t.passes[b.name][kernel] += float64(e-s) / float64(b.hi-b.lo)
			}
		}
	}
}

// PassReport lists, per tracked buffer, the passes over it per step
// (steps: how many steps the counts cover), by kernel, and the total.
func (t *TimedDevice) PassReport(steps int) []string {
	if len(t.tracked) == 0 || steps <= 0 {
		return nil
	}
	var out []string
	var total float64
	for _, b := range t.tracked {
		k := t.passes[b.name]
		names := make([]string, 0, len(k))
		var sum float64
		for n, v := range k {
			names = append(names, n)
			sum += v
		}
		slices.Sort(names)
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = fmt.Sprintf("%s %.2f", n, k[n]/float64(steps))
		}
		total += sum / float64(steps)
		out = append(out, fmt.Sprintf("passes per step over %s: %.2f (%s)", b.name, sum/float64(steps), strings.Join(parts, ", ")))
	}
	return append(out, fmt.Sprintf("passes per step over parameter-sized buffers: %.2f", total))
}
