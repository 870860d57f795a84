// A thin C shim over Gloo's C++ API, so Go can call it through cgo. The
// rendezvous store is implemented in Go (collective.StoreClient); GoStore
// forwards Gloo's store calls to it through functions exported by gloo.go.

#include "shim.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/reduce_scatter.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

// Exported by gloo.go (cgo //export). Each returns NULL or a malloc'd error.
extern "C" {
char* honeGlooStoreSet(uintptr_t h, char* key, char* data, size_t n);
char* honeGlooStoreGet(uintptr_t h, char* key, char** out, size_t* n);
char* honeGlooStoreWait(uintptr_t h, char** keys, int nkeys, int64_t timeout_ms);
}

struct hone_gloo {
  std::shared_ptr<gloo::transport::Device> dev;
  std::shared_ptr<gloo::rendezvous::Context> ctx;
  uint32_t tag = 0;
};

namespace {

void raise(char* e) {
  if (e == nullptr) return;
  std::string msg(e);
  free(e);
  throw std::runtime_error(msg);
}

class GoStore : public gloo::rendezvous::Store {
 public:
  GoStore(uintptr_t h, std::chrono::milliseconds timeout) : h_(h), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    std::vector<char> buf(data);
    raise(honeGlooStoreSet(h_, const_cast<char*>(key.c_str()), buf.data(), buf.size()));
  }

  std::vector<char> get(const std::string& key) override {
    char* out = nullptr;
    size_t n = 0;
    raise(honeGlooStoreGet(h_, const_cast<char*>(key.c_str()), &out, &n));
    std::vector<char> v(out, out + n);
    free(out);
    return v;
  }

  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }

  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    std::vector<char*> ks;
    for (const auto& k : keys) ks.push_back(const_cast<char*>(k.c_str()));
    raise(honeGlooStoreWait(h_, ks.data(), (int)ks.size(), timeout.count()));
  }

 private:
  uintptr_t h_;
  std::chrono::milliseconds timeout_;
};

int fail(hone_gloo* g, char** err, const char* what) {
  *err = strdup(what);
  // Drop the connections: a failed operation may still have transfers
  // pending into caller memory, which must stop before the call returns.
  if (g != nullptr) {
    g->ctx.reset();
    g->dev.reset();
  }
  return -1;
}

int broken(char** err) {
  *err = strdup("group is closed after an earlier failure");
  return -1;
}

}  // namespace

extern "C" {

int hone_gloo_connect(uintptr_t store, int rank, int size, const char* host, int64_t timeout_ms, hone_gloo** out,
                      char** err) {
  try {
    auto g = std::make_unique<hone_gloo>();
    gloo::transport::tcp::attr attr;
    attr.hostname = host;
    g->dev = gloo::transport::tcp::CreateDevice(attr);
    g->ctx = std::make_shared<gloo::rendezvous::Context>(rank, size);
    g->ctx->setTimeout(std::chrono::milliseconds(timeout_ms));
    GoStore st(store, std::chrono::milliseconds(timeout_ms));
    g->ctx->connectFullMesh(st, g->dev);
    *out = g.release();
    return 0;
  } catch (const std::exception& e) {
    return fail(nullptr, err, e.what());
  }
}

int hone_gloo_allreduce(hone_gloo* g, float* buf, size_t n, int64_t timeout_ms, char** err) {
  if (!g->ctx) return broken(err);
  try {
    gloo::AllreduceOptions opts(g->ctx);
    opts.setOutput(buf, n);
    opts.setReduceFunction(
        static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts.setTag(g->tag++);
    opts.setTimeout(std::chrono::milliseconds(timeout_ms));
    gloo::allreduce(opts);
    return 0;
  } catch (const std::exception& e) {
    return fail(g, err, e.what());
  }
}

int hone_gloo_reduce_scatter(hone_gloo* g, float* buf, size_t n, const int* counts, char** err) {
  if (!g->ctx) return broken(err);
  try {
    std::vector<int> recv(counts, counts + g->ctx->size);
    // The halving-doubling algorithm runs on the context's pairs, so the
    // group's timeout (set at connect) bounds it.
    gloo::ReduceScatterHalvingDoubling<float> alg(g->ctx, std::vector<float*>{buf}, (int)n, recv);
    alg.run();
    return 0;
  } catch (const std::exception& e) {
    return fail(g, err, e.what());
  }
}

int hone_gloo_allgather(hone_gloo* g, float* out, const float* in, size_t n, int64_t timeout_ms, char** err) {
  if (!g->ctx) return broken(err);
  try {
    gloo::AllgatherOptions opts(g->ctx);
    opts.setInput(const_cast<float*>(in), n);
    opts.setOutput(out, n * g->ctx->size);
    opts.setTag(g->tag++);
    opts.setTimeout(std::chrono::milliseconds(timeout_ms));
    gloo::allgather(opts);
    return 0;
  } catch (const std::exception& e) {
    return fail(g, err, e.what());
  }
}

int hone_gloo_broadcast(hone_gloo* g, float* buf, size_t n, int root, int64_t timeout_ms, char** err) {
  if (!g->ctx) return broken(err);
  try {
    gloo::BroadcastOptions opts(g->ctx);
    opts.setOutput(buf, n);
    opts.setRoot(root);
    opts.setTag(g->tag++);
    opts.setTimeout(std::chrono::milliseconds(timeout_ms));
    gloo::broadcast(opts);
    return 0;
  } catch (const std::exception& e) {
    return fail(g, err, e.what());
  }
}

int hone_gloo_barrier(hone_gloo* g, int64_t timeout_ms, char** err) {
  if (!g->ctx) return broken(err);
  try {
    gloo::BarrierOptions opts(g->ctx);
    opts.setTag(g->tag++);
    opts.setTimeout(std::chrono::milliseconds(timeout_ms));
    gloo::barrier(opts);
    return 0;
  } catch (const std::exception& e) {
    return fail(g, err, e.what());
  }
}

void hone_gloo_close(hone_gloo* g) { delete g; }

}  // extern "C"
