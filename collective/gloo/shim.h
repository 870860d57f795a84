// C interface of the C++ shim over Gloo (shim.cc). Every function that can
// fail returns 0 on success, or -1 with *err set to a malloc'd message the
// caller frees. After a failure the group is unusable (hone_gloo_close it).
#ifndef HONE_GLOO_SHIM_H
#define HONE_GLOO_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hone_gloo hone_gloo;

// hone_gloo_connect binds the TCP transport to host (an address of this
// machine), meets the other ranks through the Go store behind handle
// store, and connects to every peer, all within timeout_ms. Each
// pair's listening socket admits only the address its peer published in
// the store.
int hone_gloo_connect(uintptr_t store, int rank, int size, const char* host, int64_t timeout_ms, hone_gloo** out, char** err);
int hone_gloo_allreduce(hone_gloo* g, float* buf, size_t n, int64_t timeout_ms, char** err);
int hone_gloo_reduce_scatter(hone_gloo* g, float* buf, size_t n, const int* counts, int64_t timeout_ms, char** err);
int hone_gloo_allgather(hone_gloo* g, float* out, const float* in, size_t n, int64_t timeout_ms, char** err);
int hone_gloo_broadcast(hone_gloo* g, float* buf, size_t n, int root, int64_t timeout_ms, char** err);
int hone_gloo_barrier(hone_gloo* g, int64_t timeout_ms, char** err);
// hone_gloo_scratch_floats is the reduce-scatter's receive buffer, kept
// between calls: as large as the largest part of any call so far.
size_t hone_gloo_scratch_floats(hone_gloo* g);
void hone_gloo_close(hone_gloo* g);

#ifdef __cplusplus
}
#endif

#endif
