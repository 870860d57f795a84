// Package gloo implements collective.Collective on Gloo (the collective
// library PyTorch uses for CPU training), through cgo and a small C++
// shim (shim.cc) over Debian's libgloo-dev, TCP transport.
//
// The rendezvous uses collective's TCP store: Gloo's Store calls come back
// into Go (the exported honeGlooStore* functions) and go to a
// collective.StoreClient. The transport binds to Config.ListenHost only,
// and each pair's listening socket admits only the address its peer rank
// published in the store (a socket filter set before the pair's address
// is published; see shim.cc).
package gloo

/*
#cgo CXXFLAGS: -std=c++17 -O2
#cgo LDFLAGS: -lgloo -lstdc++
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"runtime/cgo"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"hone/collective"
)

// Group is one rank's membership in a Gloo group.
type Group struct {
	mu      sync.Mutex
	g       *C.hone_gloo
	rank    int
	size    int
	timeout time.Duration
	broken  bool
}

var _ collective.Collective = (*Group)(nil)

// store is what the exported callbacks reach through a cgo.Handle.
type store struct {
	c      *collective.StoreClient
	prefix string
}

// New joins the group cfg describes: it connects to the rendezvous store
// (hosted by rank 0, see collective.ServeStore), publishes this rank's
// transport address and connects to every peer, failing after cfg.Timeout
// (or ctx's deadline) if some rank does not arrive, or when ctx ends.
func New(ctx context.Context, cfg collective.Config) (*Group, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	timeout := collective.CallTimeout(ctx, cfg.Timeout)
	if cfg.Size == 1 {
		return &Group{rank: 0, size: 1, timeout: cfg.Timeout}, nil
	}
	// Gloo writes to its peers' sockets from its own threads without
	// MSG_NOSIGNAL: when a peer dies, the SIGPIPE raised on such a non-Go
	// thread would kill this process instead of failing the collective.
	signal.Ignore(syscall.SIGPIPE)
	sc, err := collective.DialStore(ctx, cfg.StoreAddr, cfg.Secret, cfg.Rank, timeout)
	if err != nil {
		return nil, fmt.Errorf("rank %d: join the rendezvous: %w", cfg.Rank, err)
	}
	// The store connection is needed only for the rendezvous. Dropping it
	// when ctx ends fails a wait for ranks that may never come at once.
	defer sc.Close()
	defer context.AfterFunc(ctx, func() { sc.Close() })()
	h := cgo.NewHandle(&store{c: sc, prefix: cfg.Prefix + "/"})
	defer h.Delete()
	host := C.CString(cfg.ListenHost)
	defer C.free(unsafe.Pointer(host))
	var g *C.hone_gloo
	var cerr *C.char
	if C.hone_gloo_connect(C.uintptr_t(h), C.int(cfg.Rank), C.int(cfg.Size), host, C.int64_t(timeout.Milliseconds()), &g, &cerr) != 0 {
		return nil, fmt.Errorf("rank %d of %d: connect to the peers (listening on %s): %w", cfg.Rank, cfg.Size, cfg.ListenHost, cError(cerr))
	}
	return &Group{g: g, rank: cfg.Rank, size: cfg.Size, timeout: cfg.Timeout}, nil
}

// cError turns a shim error into a Go error, marking timeouts.
func cError(e *C.char) error {
	msg := C.GoString(e)
	C.free(unsafe.Pointer(e))
	// A store error came through the shim as text: wrap it once.
	msg = strings.TrimSuffix(msg, ": "+collective.ErrTimeout.Error())
	if strings.Contains(strings.ToLower(msg), "timed out") || strings.Contains(msg, "Timed out") || strings.Contains(msg, "timeout") {
		return fmt.Errorf("%s: %w", msg, collective.ErrTimeout)
	}
	return errors.New(msg)
}

func (g *Group) Rank() int { return g.rank }
func (g *Group) Size() int { return g.size }

// call runs one shim operation under the group's lock, marking the group
// broken when it fails.
func (g *Group) call(what string, op func() (C.int, *C.char)) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.broken || (g.g == nil && g.size > 1) {
		return collective.ErrBroken
	}
	if g.size == 1 {
		return nil
	}
	if rc, e := op(); rc != 0 {
		g.broken = true
		return fmt.Errorf("rank %d: %s: %w", g.rank, what, cError(e))
	}
	return nil
}

func (g *Group) ms(ctx context.Context) C.int64_t {
	return C.int64_t(max(collective.CallTimeout(ctx, g.timeout).Milliseconds(), 1))
}

func fptr(b []float32) *C.float {
	if len(b) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&b[0]))
}

func (g *Group) AllReduce(ctx context.Context, buf []float32) error {
	if len(buf) == 0 {
		return nil
	}
	return g.call("allreduce", func() (C.int, *C.char) {
		var e *C.char
		return C.hone_gloo_allreduce(g.g, fptr(buf), C.size_t(len(buf)), g.ms(ctx), &e), e
	})
}

// ReduceScatter is the shim's ring reduce-scatter (shim.cc): each part
// travels the ring once, summed on the way, and ends in place.
func (g *Group) ReduceScatter(ctx context.Context, buf []float32, counts []int) error {
	if len(counts) != g.size {
		return fmt.Errorf("reduce-scatter: %d counts for %d ranks", len(counts), g.size)
	}
	if off := collective.Offsets(counts); off[g.size] != len(buf) {
		return fmt.Errorf("reduce-scatter: counts sum to %d, buffer holds %d", off[g.size], len(buf))
	}
	if len(buf) == 0 {
		return nil
	}
	cc := make([]C.int, len(counts))
	for i, c := range counts {
		cc[i] = C.int(c)
	}
	return g.call("reduce-scatter", func() (C.int, *C.char) {
		var e *C.char
		return C.hone_gloo_reduce_scatter(g.g, fptr(buf), C.size_t(len(buf)), &cc[0], g.ms(ctx), &e), e
	})
}

func (g *Group) AllGather(ctx context.Context, out, in []float32) error {
	if len(out) != len(in)*g.size {
		return fmt.Errorf("allgather: output holds %d, want %d·%d", len(out), len(in), g.size)
	}
	if g.size == 1 {
		copy(out, in)
		return nil
	}
	if len(in) == 0 {
		return nil
	}
	return g.call("allgather", func() (C.int, *C.char) {
		var e *C.char
		return C.hone_gloo_allgather(g.g, fptr(out), fptr(in), C.size_t(len(in)), g.ms(ctx), &e), e
	})
}

func (g *Group) Broadcast(ctx context.Context, buf []float32, root int) error {
	if root < 0 || root >= g.size {
		return fmt.Errorf("broadcast: root %d is outside [0, %d)", root, g.size)
	}
	if len(buf) == 0 {
		return nil
	}
	return g.call("broadcast", func() (C.int, *C.char) {
		var e *C.char
		return C.hone_gloo_broadcast(g.g, fptr(buf), C.size_t(len(buf)), C.int(root), g.ms(ctx), &e), e
	})
}

func (g *Group) Barrier(ctx context.Context) error {
	return g.call("barrier", func() (C.int, *C.char) {
		var e *C.char
		return C.hone_gloo_barrier(g.g, g.ms(ctx), &e), e
	})
}

// ScratchBytes is the memory the group keeps between calls: the ring
// reduce-scatter's receive buffer, as large as the largest part of any
// call so far (a memory plan counts it: engine.PartCollectiveScratch).
func (g *Group) ScratchBytes() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g == nil {
		return 0
	}
	return 4 * int64(C.hone_gloo_scratch_floats(g.g))
}

func (g *Group) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g != nil {
		C.hone_gloo_close(g.g)
		g.g = nil
	}
	g.broken = true
	return nil
}

func errString(err error) *C.char {
	if err == nil {
		return nil
	}
	return C.CString(err.Error())
}

//export honeGlooStoreSet
func honeGlooStoreSet(h C.uintptr_t, key *C.char, data *C.char, n C.size_t) *C.char {
	s := cgo.Handle(h).Value().(*store)
	return errString(s.c.Set(s.prefix+C.GoString(key), C.GoBytes(unsafe.Pointer(data), C.int(n))))
}

//export honeGlooStoreGet
func honeGlooStoreGet(h C.uintptr_t, key *C.char, out **C.char, n *C.size_t) *C.char {
	s := cgo.Handle(h).Value().(*store)
	v, err := s.c.Get(s.prefix + C.GoString(key))
	if err != nil {
		return errString(err)
	}
	*out = (*C.char)(C.CBytes(v))
	*n = C.size_t(len(v))
	return nil
}

//export honeGlooStoreWait
func honeGlooStoreWait(h C.uintptr_t, keys **C.char, nkeys C.int, timeoutMS C.int64_t) *C.char {
	s := cgo.Handle(h).Value().(*store)
	ks := make([]string, int(nkeys))
	for i, k := range unsafe.Slice(keys, int(nkeys)) {
		ks[i] = s.prefix + C.GoString(k)
	}
	return errString(s.c.Wait(ks, time.Duration(timeoutMS)*time.Millisecond))
}
