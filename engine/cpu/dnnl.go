package cpu

/*
#cgo LDFLAGS: -ldnnl -lgomp
#include <stdlib.h>
#include <oneapi/dnnl/dnnl.h>

// From libgomp, which Debian's oneDNN uses for its threads.
extern void omp_set_num_threads(int);
extern int omp_get_max_threads(void);

// hone_threads makes the calling OS thread's OpenMP parallel regions use
// n threads. The setting is per OS thread, and Go runs cgo calls on
// whichever thread the goroutine is on: a thread that never set it uses
// OpenMP's default (OMP_NUM_THREADS, else all cores), so every call sets
// it first. oneDNN reads it when it creates a primitive and when it runs
// one.
static void hone_threads(int n) {
	if (n > 0 && omp_get_max_threads() != n) omp_set_num_threads(n);
}

// A matmul primitive for one shape, with memory objects whose data handles
// are swapped per call, so nothing is allocated on the hot path.
typedef struct {
	dnnl_primitive_t prim;
	dnnl_memory_t a, b, c;
} hone_mm;

static dnnl_engine_t hone_engine;
static dnnl_stream_t hone_stream;

// hone_init creates the process's one oneDNN engine and stream; later
// calls keep them, so every device's primitives stay valid.
static int hone_init(void) {
	if (hone_engine) return 0;
	dnnl_status_t s = dnnl_engine_create(&hone_engine, dnnl_cpu, 0);
	if (s != dnnl_success) return (int)s;
	return (int)dnnl_stream_create(&hone_stream, hone_engine, dnnl_stream_default_flags);
}

// hone_mm_create builds a (batched) matmul c = a·b (+ c when acc) over
// ndims-dimensional operands given by dims and strides in elements, so
// transposes, head slices and broadcast batches need no copies. Operand
// types are f32 or bf16 (dt_ab); the output is always f32.
static int hone_mm_create(hone_mm *mm, int nd, const long *ad, const long *as, const long *bd, const long *bs,
		const long *cd, const long *cs, int acc, dnnl_data_type_t dt_ab) {
	dnnl_memory_desc_t amd, bmd, cmd;
	dnnl_dims_t a_d, a_s, b_d, b_s, c_d, c_s;
	for (int i = 0; i < nd; i++) {
		a_d[i] = ad[i]; a_s[i] = as[i]; b_d[i] = bd[i]; b_s[i] = bs[i]; c_d[i] = cd[i]; c_s[i] = cs[i];
	}
	dnnl_status_t s;
	if ((s = dnnl_memory_desc_init_by_strides(&amd, nd, a_d, dt_ab, a_s)) != dnnl_success) return (int)s;
	if ((s = dnnl_memory_desc_init_by_strides(&bmd, nd, b_d, dt_ab, b_s)) != dnnl_success) return (int)s;
	if ((s = dnnl_memory_desc_init_by_strides(&cmd, nd, c_d, dnnl_f32, c_s)) != dnnl_success) return (int)s;
	dnnl_matmul_desc_t md;
	if ((s = dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd)) != dnnl_success) return (int)s;
	dnnl_primitive_attr_t attr = NULL;
	if ((s = dnnl_primitive_attr_create(&attr)) != dnnl_success) return (int)s;
	if (acc) {
		dnnl_post_ops_t po;
		dnnl_post_ops_create(&po);
		dnnl_post_ops_append_sum(po, 1.0f);
		dnnl_primitive_attr_set_post_ops(attr, po);
		dnnl_post_ops_destroy(po);
	}
	dnnl_primitive_desc_t pd;
	s = dnnl_primitive_desc_create(&pd, &md, attr, hone_engine, NULL);
	dnnl_primitive_attr_destroy(attr);
	if (s != dnnl_success) return (int)s;
	s = dnnl_primitive_create(&mm->prim, pd);
	dnnl_primitive_desc_destroy(pd);
	if (s != dnnl_success) return (int)s;
	if ((s = dnnl_memory_create(&mm->a, &amd, hone_engine, DNNL_MEMORY_NONE)) != dnnl_success) return (int)s;
	if ((s = dnnl_memory_create(&mm->b, &bmd, hone_engine, DNNL_MEMORY_NONE)) != dnnl_success) return (int)s;
	return (int)dnnl_memory_create(&mm->c, &cmd, hone_engine, DNNL_MEMORY_NONE);
}

// hone_mm_destroy releases what hone_mm_create made (any part may be
// missing after a failed create) and mm itself.
static void hone_mm_destroy(hone_mm *mm) {
	if (mm->prim) dnnl_primitive_destroy(mm->prim);
	if (mm->a) dnnl_memory_destroy(mm->a);
	if (mm->b) dnnl_memory_destroy(mm->b);
	if (mm->c) dnnl_memory_destroy(mm->c);
	free(mm);
}

static int hone_mm_exec(hone_mm *mm, void *a, void *b, void *c) {
	dnnl_memory_set_data_handle(mm->a, a);
	dnnl_memory_set_data_handle(mm->b, b);
	dnnl_memory_set_data_handle(mm->c, c);
	dnnl_exec_arg_t args[3] = {
		{DNNL_ARG_SRC, mm->a}, {DNNL_ARG_WEIGHTS, mm->b}, {DNNL_ARG_DST, mm->c},
	};
	dnnl_status_t s = dnnl_primitive_execute(mm->prim, hone_stream, 3, args);
	if (s != dnnl_success) return (int)s;
	return (int)dnnl_stream_wait(hone_stream);
}
*/
import "C"

import (
	"container/list"
	"fmt"
	"sync"
	"unsafe"

	"hone/engine"
)

// mmKey identifies a matmul primitive: up to 4 dimensions of a, b and c with
// their strides (unused trailing entries zero), accumulation and dtype.
type mmKey struct {
	nd           int
	a, as, b, bs [4]int
	c, cs        [4]int
	acc, b16     bool
}

// key2D describes c(m,n) = op(a)(m,k)·op(b)(k,n) on row-major operands.
func key2D(m, n, k int, f engine.MatMulFlags, b16 bool) mmKey {
	key := mmKey{nd: 2, acc: f.Acc, b16: b16}
	key.a, key.as = [4]int{m, k}, [4]int{k, 1}
	if f.TransA {
		key.as = [4]int{1, m}
	}
	key.b, key.bs = [4]int{k, n}, [4]int{n, 1}
	if f.TransB {
		key.bs = [4]int{1, k}
	}
	key.c, key.cs = [4]int{m, n}, [4]int{n, 1}
	return key
}

// primCacheCap bounds the primitives a device keeps. Training touches a
// few dozen shapes; serving makes new ones for every prompt length, which
// without a bound would grow memory forever.
const primCacheCap = 256

// matmuls caches oneDNN primitives by shape, least recently used evicted
// past cap: creating one costs far more than running a small one.
type matmuls struct {
	threads int // OpenMP threads of every call (hone_threads); 0 leaves the thread's setting
	cap     int // 0 means primCacheCap
	prims   map[mmKey]*list.Element
	lru     list.List // of *primEntry, most recently used first
}

type primEntry struct {
	key mmKey
	p   *C.hone_mm
}

// dnnlMu serialises all oneDNN work of the process: devices share its one
// engine, stream and OpenMP pool (training and serving in one process).
var dnnlMu sync.Mutex

// get returns the primitive for key, creating it (and evicting the least
// recently used one past the cap) when absent. Called with dnnlMu held.
func (mm *matmuls) get(key mmKey) *C.hone_mm {
	if mm.prims == nil {
		if s := C.hone_init(); s != 0 {
			panic(fmt.Sprintf("oneDNN: create CPU engine: status %d", int(s)))
		}
		mm.prims = map[mmKey]*list.Element{}
	}
	if e, ok := mm.prims[key]; ok {
		mm.lru.MoveToFront(e)
		return e.Value.(*primEntry).p
	}
	limit := mm.cap
	if limit <= 0 {
		limit = primCacheCap
	}
	for mm.lru.Len() >= limit {
		old := mm.lru.Remove(mm.lru.Back()).(*primEntry)
		delete(mm.prims, old.key)
		C.hone_mm_destroy(old.p)
	}
	p := createPrim(key)
	mm.prims[key] = mm.lru.PushFront(&primEntry{key: key, p: p})
	return p
}

// createPrim builds the oneDNN matmul primitive for key.
func createPrim(key mmKey) *C.hone_mm {
	p := (*C.hone_mm)(C.calloc(1, C.sizeof_hone_mm))
	dt := C.dnnl_data_type_t(C.dnnl_f32)
	if key.b16 {
		dt = C.dnnl_bf16
	}
	arr := func(v [4]int) *C.long {
		a := (*[4]C.long)(C.malloc(4 * C.sizeof_long))
		for i := range v {
			a[i] = C.long(v[i])
		}
		return &a[0]
	}
	ptrs := []*C.long{arr(key.a), arr(key.as), arr(key.b), arr(key.bs), arr(key.c), arr(key.cs)}
	s := C.hone_mm_create(p, C.int(key.nd), ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], cbool(key.acc), dt)
	for _, q := range ptrs {
		C.free(unsafe.Pointer(q))
	}
	if s != 0 {
		C.hone_mm_destroy(p)
		// Shapes come from a validated config; failure here is a broken install.
		panic(fmt.Sprintf("oneDNN: create matmul %+v: status %d", key, int(s)))
	}
	return p
}

// cached is how many primitives the cache holds.
func (mm *matmuls) cached() int {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	return mm.lru.Len()
}

// ompThreads is the calling OS thread's OpenMP thread count (what a
// primitive created or run on it now would use); setOMPThreads sets it.
// Tests lock the goroutine to its thread around them.
func ompThreads() int     { return int(C.omp_get_max_threads()) }
func setOMPThreads(n int) { C.omp_set_num_threads(C.int(n)) }

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// run executes the primitive for key on base pointers a, b, c (f32 or bf16
// operands as the key says; c is f32).
func (mm *matmuls) run(key mmKey, c, a, b unsafe.Pointer) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	C.hone_threads(C.int(mm.threads))
	p := mm.get(key)
	if s := C.hone_mm_exec(p, a, b, c); s != 0 {
		panic(fmt.Sprintf("oneDNN: execute matmul %+v: status %d", key, int(s)))
	}
}
