package cpu

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"hone/engine"
)

// stepShape is one matrix product of a training step and how many times
// one step runs it.
type stepShape struct {
	name    string
	m, n, k int
	f       engine.MatMulFlags
	calls   int
}

// stepShapes lists the products one full-fine-tuning step of a dense
// model makes on rows token rows (batch × sequence) without
// recomputation, as engine.Model's layerForward, layerBackward and head
// pass them to the device: hidden c, intermediate ff, query width qd,
// key/value width kvd, vocabulary v, loss chunks of chunk rows. Weight
// gradients overwrite (the step after OverwriteGrads); the head's adds
// after its first chunk, counted as all adding.
func stepShapes(layers, rows, c, ff, qd, kvd, v, chunk int) []stepShape {
	tb, no, acc := engine.MatMulFlags{TransB: true}, engine.MatMulFlags{}, engine.MatMulFlags{Acc: true}
	tbAcc, ta := engine.MatMulFlags{TransB: true, Acc: true}, engine.MatMulFlags{TransA: true}
	L, chunks := layers, (rows+chunk-1)/chunk
	return []stepShape{
		{"fq", rows, qd, c, tb, L}, {"fkv", rows, kvd, c, tb, 2 * L}, {"fo", rows, c, qd, tbAcc, L},
		{"fgu", rows, ff, c, tb, 2 * L}, {"fdown", rows, c, ff, tbAcc, L},
		{"dxdown", rows, ff, c, no, L}, {"dxgate", rows, c, ff, no, L}, {"dxup", rows, c, ff, acc, L},
		{"dxo", rows, qd, c, no, L}, {"dxq", rows, c, qd, no, L}, {"dxkv", rows, c, kvd, acc, 2 * L},
		{"dwdown", c, ff, rows, ta, L}, {"dwgu", ff, c, rows, ta, 2 * L}, {"dwo", c, qd, rows, ta, L},
		{"dwq", qd, c, rows, ta, L}, {"dwkv", kvd, c, rows, ta, 2 * L},
		{"hlogits", chunk, v, c, tb, chunks}, {"hdx", chunk, c, v, no, chunks},
		{"hdw", v, c, chunk, engine.MatMulFlags{TransA: true, Acc: true}, chunks},
	}
}

// BenchmarkStepShapes times, shape by shape, the products of one 125M
// (llama-125m-128k: 12 layers, 768 hidden, 2048 intermediate, 4 of 12
// heads for keys and values, vocabulary 128256, loss chunks of 256 or
// HONE_BENCH_LOSS_CHUNK rows) bf16 and fp32 training step at sequence
// 8192 × batch 1 and 256 × 4, through MatMulBF16 and MatMul as the
// model calls them. Each reports, from its
// fastest run, its rate (GFLOP/s), its rate per CPU second of the device's
// threads (GFLOP/cpu-s, which other processes' time slices lower less),
// that over the same rate of the 2048³ product ("ceil": the bench's MFU
// denominator, timed first) and the milliseconds one step spends in it
// (step-ms: time per product × products per step). For example
//
//	go test ./engine/cpu -run X -bench 'StepShapes/bf16/T8192' -benchtime 3x
func BenchmarkStepShapes(b *testing.B) {
	d := New(0)
	if os.Getenv("HONE_BENCH_FP32_WHOLE") != "" { // fp32 long k in one call, as before kSlice32
		d.kSlice32 = 0
	}
	chunk := 256 // HONE_BENCH_LOSS_CHUNK=n: the head's products on loss chunks of n rows
	if n, err := strconv.Atoi(os.Getenv("HONE_BENCH_LOSS_CHUNK")); err == nil && n > 0 {
		chunk = n
	}
	ceil := map[bool]float64{}
	for _, bf := range []bool{true, false} {
		prec := map[bool]string{true: "bf16", false: "fp32"}[bf]
		for _, run := range []struct {
			name string
			rows int
		}{{"T8192", 8192}, {"T256x4", 1024}} {
			shapes := append([]stepShape{{"ceil", 2048, 2048, 2048, engine.MatMulFlags{TransB: true}, 0}},
				stepShapes(12, run.rows, 768, 2048, 768, 256, 128256, chunk)...)
			for _, s := range shapes {
				name := fmt.Sprintf("%s/%s/%s_%dx%dx%d", prec, run.name, s.name, s.m, s.n, s.k)
				b.Run(name, func(b *testing.B) {
					gf := benchProduct(b, d, s, bf)
					if s.name == "ceil" {
						ceil[bf] = gf
					} else if ceil[bf] > 0 {
						b.ReportMetric(gf/ceil[bf], "ceil")
					}
				})
			}
		}
	}
}

// benchProduct runs s b.N times after one untimed run (primitive creation,
// first touch of c) and reports its rates; it returns the one per CPU
// second.
func benchProduct(b *testing.B, d *Device, s stepShape, bf bool) float64 {
	c := benchAlloc[float32](b, s.m*s.n)
	var a, w []float32
	var a16, w16 []uint16
	if bf {
		a16, w16 = benchAlloc[uint16](b, s.m*s.k), benchAlloc[uint16](b, s.k*s.n)
		for i := range a16 {
			a16[i] = 0x3f80 + uint16(i%7)
		}
		for i := range w16 {
			w16[i] = 0x3b00 + uint16(i%5)
		}
	} else {
		a, w = benchAlloc[float32](b, s.m*s.k), benchAlloc[float32](b, s.k*s.n)
		for i := range a {
			a[i] = 1 + float32(i%7)/8
		}
		for i := range w {
			w[i] = 1e-3 * float32(1+i%5)
		}
	}
	run := func() {
		if bf {
			d.MatMulBF16(c, a16, w16, s.m, s.n, s.k, s.f)
		} else {
			d.MatMul(c, a, w, s.m, s.n, s.k, s.f)
		}
	}
	run()
	b.ResetTimer()
	var wall, cpu time.Duration // fastest run: a loaded machine slows some
	for i := 0; i < b.N; i++ {
		st, stCPU := time.Now(), cpuTime()
		run()
		if e := time.Since(st); wall == 0 || e < wall {
			wall = e
		}
		if e := cpuTime() - stCPU; cpu == 0 || e < cpu {
			cpu = e
		}
	}
	flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)
	b.ReportMetric(flops/wall.Seconds()/1e9, "GFLOP/s")
	// Per CPU second of the device's threads: time-slices given to other
	// processes do not count.
	gf := flops / (cpu.Seconds() / float64(d.threads)) / 1e9
	b.ReportMetric(gf, "GFLOP/cpu-s")
	b.ReportMetric(wall.Seconds()*1e3*float64(s.calls), "step-ms")
	return gf
}

// benchAlloc is make, or with HONE_BENCH_THP=1 an mmap advised to use
// transparent huge pages (unmapped when b ends): it shows what TLB misses
// cost a product.
func benchAlloc[T uint16 | float32](b *testing.B, n int) []T {
	if os.Getenv("HONE_BENCH_THP") == "" {
		return make([]T, n)
	}
	size := n * int(unsafe.Sizeof(T(0)))
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		b.Fatal(err)
	}
	if err := syscall.Madvise(mem, 14); err != nil { // MADV_HUGEPAGE
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = syscall.Munmap(mem) })
	return unsafe.Slice((*T)(unsafe.Pointer(&mem[0])), n)
}

// traceDev is the device with its products timed per shape (wall and
// process CPU time: during a product only oneDNN's threads run).
type traceDev struct {
	*Device
	stats map[stepKey]*stepStat
}

type stepKey struct {
	m, n, k int
	f       engine.MatMulFlags
	bf      bool
}

type stepStat struct {
	calls     int
	wall, cpu time.Duration
}

func (t *traceDev) note(k stepKey, run func()) {
	st, stCPU := time.Now(), cpuTime()
	run()
	s := t.stats[k]
	if s == nil {
		s = &stepStat{}
		t.stats[k] = s
	}
	s.calls++
	s.wall += time.Since(st)
	s.cpu += cpuTime() - stCPU
}

func (t *traceDev) MatMulBF16(c []float32, a, b []uint16, m, n, k int, f engine.MatMulFlags) {
	t.note(stepKey{m, n, k, f, true}, func() { t.Device.MatMulBF16(c, a, b, m, n, k, f) })
}

func (t *traceDev) MatMul(c, a, b []float32, m, n, k int, f engine.MatMulFlags) {
	t.note(stepKey{m, n, k, f, false}, func() { t.Device.MatMul(c, a, b, m, n, k, f) })
}

// BenchmarkStepShapesInModel (HONE_STEP_SHAPES=seq,batch,precision, e.g.
// 8192,1,bf16) runs b.N full-fine-tuning steps of the 125M-128k model
// after one warm-up and lists each product shape's calls, time and rate
// inside the step, to set beside BenchmarkStepShapes' rates of the same
// shapes alone.
func BenchmarkStepShapesInModel(b *testing.B) {
	spec := os.Getenv("HONE_STEP_SHAPES")
	if spec == "" {
		b.Skip("set HONE_STEP_SHAPES=seq,batch,precision")
	}
	var seq, batch int
	var prec string
	if _, err := fmt.Sscanf(strings.ReplaceAll(spec, ",", " "), "%d %d %s", &seq, &batch, &prec); err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile("../../bench/configs/llama-125m-128k.json")
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := engine.ParseConfig(raw)
	if err != nil {
		b.Fatal(err)
	}
	dev := &traceDev{Device: New(0), stats: map[stepKey]*stepStat{}}
	m := engine.New(cfg, dev, engine.Options{BF16: prec == "bf16"})
	m.InitRandom(1)
	ids := make([][]int, batch)
	for i := range ids {
		ids[i] = make([]int, seq)
		for j := range ids[i] {
			ids[i][j] = (j*7919 + i*104729) % cfg.VocabSize
		}
	}
	bt, err := engine.NewBatch(ids, ids, nil, cfg.VocabSize)
	if err != nil {
		b.Fatal(err)
	}
	step := func() {
		m.OverwriteGrads()
		m.ForwardBackward(bt, 1/float32(bt.Scored()))
	}
	step()
	clear(dev.stats)
	var gc0, gc1 runtime.MemStats
	runtime.ReadMemStats(&gc0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step()
	}
	b.StopTimer()
	runtime.ReadMemStats(&gc1)
	b.Logf("garbage collections in the timed steps: %d (pauses %v), heap %d MiB", gc1.NumGC-gc0.NumGC,
		time.Duration(gc1.PauseTotalNs-gc0.PauseTotalNs), gc1.HeapAlloc>>20)
	var wall, cpu time.Duration
	var flops float64
	keys := make([]stepKey, 0, len(dev.stats))
	for k := range dev.stats {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return dev.stats[keys[i]].wall > dev.stats[keys[j]].wall })
	for _, k := range keys {
		s := dev.stats[k]
		f := 2 * float64(k.m) * float64(k.n) * float64(k.k) * float64(s.calls)
		wall, cpu, flops = wall+s.wall, cpu+s.cpu, flops+f
		b.Logf("%5dx%6dx%6d ta=%-5v tb=%-5v acc=%-5v bf16=%-5v calls %4d  wall %8.3f s  %6.1f GFLOP/s  %6.1f GFLOP/cpu-s",
			k.m, k.n, k.k, k.f.TransA, k.f.TransB, k.f.Acc, k.bf, s.calls, s.wall.Seconds(), f/s.wall.Seconds()/1e9,
			f/(s.cpu.Seconds()/float64(dev.threads))/1e9)
	}
	b.Logf("all products: %.3f s wall, %.1f GFLOP/s, %.1f GFLOP/cpu-s", wall.Seconds(), flops/wall.Seconds()/1e9, flops/(cpu.Seconds()/float64(dev.threads))/1e9)
}
