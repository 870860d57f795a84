package cpu

/*
#cgo CFLAGS: -O2
#if defined(__x86_64__)
#include <immintrin.h>
#include <time.h>

static double hone_thread_cpu(void) {
	struct timespec t;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return t.tv_sec + 1e-9 * t.tv_nsec;
}

// The vector units' peak on operands held in registers: 12 independent
// accumulators (more than an FMA's latency times its issue rate on current
// x86 cores), each updated iters times. It is what no matrix product can
// exceed; the ceiling over it says how close oneDNN's products come. The
// loops are unrolled so the accumulators stay in registers. Each returns
// the calling thread's CPU seconds for the loop (time-slicing by other
// processes does not count; another thread on the same core does).
#define PEAK_CHAINS 12

static int hone_peak_isa(void) {
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx512f")) return 0;
	return __builtin_cpu_supports("avx512bf16") ? 2 : 1;
}

__attribute__((target("avx512f")))
static double hone_peak_fp32(long iters) {
	double t0 = hone_thread_cpu();
	__m512 acc[PEAK_CHAINS];
	__m512 a = _mm512_set1_ps(1e-7f), b = _mm512_set1_ps(0.999f);
#pragma GCC unroll 16
	for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
	for (long i = 0; i < iters; i++) {
#pragma GCC unroll 16
		for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = _mm512_fmadd_ps(a, b, acc[j]);
	}
	__m512 s = acc[0];
	for (int j = 1; j < PEAK_CHAINS; j++) s = _mm512_add_ps(s, acc[j]);
	volatile float sink = _mm512_reduce_add_ps(s); // keeps the loop
	(void)sink;
	return hone_thread_cpu() - t0;
}

__attribute__((target("avx512f,avx512bf16")))
static double hone_peak_bf16(long iters) {
	double t0 = hone_thread_cpu();
	__m512 acc[PEAK_CHAINS];
	__m512bh a = (__m512bh)_mm512_set1_epi16(0x3380); // about 6e-8
	__m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80); // 1
#pragma GCC unroll 16
	for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = _mm512_set1_ps((float)j);
	for (long i = 0; i < iters; i++) {
#pragma GCC unroll 16
		for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
	}
	__m512 s = acc[0];
	for (int j = 1; j < PEAK_CHAINS; j++) s = _mm512_add_ps(s, acc[j]);
	volatile float sink = _mm512_reduce_add_ps(s); // keeps the loop
	(void)sink;
	return hone_thread_cpu() - t0;
}
#else
static int hone_peak_isa(void) { return 0; }
static double hone_peak_fp32(long iters) { return 0; }
static double hone_peak_bf16(long iters) { return 0; }
#endif
*/
import "C"

import (
	"runtime"
	"sync"
	"time"
)

// peakISA is 2 with AVX-512 BF16, 1 with AVX-512 only, 0 without.
var peakISA = int(C.hone_peak_isa())

// peakIters is one timed run per thread: 1.5·10⁸ fp32 flops (3·10⁸ bf16),
// about 1.5 ms on a current core (the CPU clock's resolution is 1 ns).
const peakIters = 400_000

// PeakGFLOPs is the vector units' measured throughput on the device's
// threads with operands in registers (independent VFMADD231PS chains for
// "fp32", VDPBF16PS for "bf16"; 32 and 64 flops per instruction): each
// thread's flops per second of its own CPU time, summed over the threads,
// the best run of those in minTime. It is what the cores can do at all,
// measured rather than derived from a clock rate, and, per CPU second, is
// not lowered by other processes' time slices. ok is false where the CPU
// lacks the instructions (AVX-512, AVX-512 BF16).
func (d *Device) PeakGFLOPs(precision string, minTime time.Duration) (gflops float64, ok bool) {
	var flops float64
	switch {
	case precision == "bf16" && peakISA >= 2:
		flops = 64
	case precision == "fp32" && peakISA >= 1:
		flops = 32
	default:
		return 0, false
	}
	perThread := flops * C.PEAK_CHAINS * peakIters
	once := func() float64 {
		cpu := make([]float64, d.threads)
		var wg sync.WaitGroup
		for i := range cpu {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread() // one OS thread each, as OpenMP's workers
				defer runtime.UnlockOSThread()
				if flops == 64 {
					cpu[i] = float64(C.hone_peak_bf16(peakIters))
				} else {
					cpu[i] = float64(C.hone_peak_fp32(peakIters))
				}
			}()
		}
		wg.Wait()
		var sum float64
		for _, c := range cpu {
			if c > 0 {
				sum += perThread / c / 1e9
			}
		}
		return sum
	}
	once() // warm-up
	for start, n := time.Now(), 0; n < 3 || time.Since(start) < minTime; n++ {
		gflops = max(gflops, once())
	}
	return gflops, true
}
