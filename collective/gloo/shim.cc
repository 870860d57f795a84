// A thin C shim over Gloo's C++ API, so Go can call it through cgo. The
// rendezvous store is implemented in Go (collective.StoreClient); GoStore
// forwards Gloo's store calls to it through functions exported by gloo.go.

#include "shim.h"

#include <dirent.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
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
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/address.h>
#include <gloo/transport/tcp/device.h>

// Exported by gloo.go (cgo //export). Each returns NULL or a malloc'd error.
extern "C" {
char* honeGlooStoreSet(uintptr_t h, char* key, char* data, size_t n);
char* honeGlooStoreGet(uintptr_t h, char* key, char** out, size_t* n);
char* honeGlooStoreWait(uintptr_t h, char** keys, int nkeys, int64_t timeout_ms);
}

struct hone_gloo {
  std::shared_ptr<gloo::transport::Device> dev;
  std::shared_ptr<gloo::Context> ctx;
  uint32_t tag = 0;
  // The reduce-scatter's receive buffer, kept between calls.
  std::vector<float> scratch;
};

// Slot prefix of the ring reduce-scatter; Gloo's own collectives use
// 0x01-0x08 (gloo/types.h).
constexpr uint8_t kReduceScatterSlotPrefix = 0x20;

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

// Admitting only the group's peers. Gloo's TCP pairs (this version) each
// listen on a port of their own; the peer that connects first becomes the
// pair's peer, and Gloo checks nothing of it. So before this rank
// publishes a pair's address, a classic BPF socket filter on the pair's
// listening socket drops every packet (the SYN included) whose source is
// not the address that pair's rank published in the rendezvous store
// (which only the group's ranks can write: they hold the run's secret).

// ipWords is an address's 32-bit words in host order, as BPF loads them.
std::vector<uint32_t> ipWords(const sockaddr_storage& ss) {
  std::vector<uint32_t> w;
  if (ss.ss_family == AF_INET) {
    w.push_back(ntohl(reinterpret_cast<const sockaddr_in&>(ss).sin_addr.s_addr));
  } else if (ss.ss_family == AF_INET6) {
    const uint8_t* b = reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr.s6_addr;
    for (int i = 0; i < 16; i += 4) w.push_back(uint32_t(b[i]) << 24 | uint32_t(b[i + 1]) << 16 | uint32_t(b[i + 2]) << 8 | b[i + 3]);
    // An IPv4-mapped address arrives as IPv4 packets on a dual-stack socket.
    if (w[0] == 0 && w[1] == 0 && w[2] == 0xffff) w = {w[3]};
  } else {
    throw std::runtime_error("the transport's address is neither IPv4 nor IPv6");
  }
  return w;
}

// admitOnly sets fd's filter to accept packets from the addresses in
// peers only (none: drop everything).
void admitOnly(int fd, const std::vector<std::vector<uint32_t>>& peers) {
  const uint32_t net = uint32_t(SKF_NET_OFF);
  std::vector<sock_filter> p;
  p.push_back(BPF_STMT(BPF_LD | BPF_B | BPF_ABS, net));  // the IP version nibble
  p.push_back(BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 4));
  p.push_back(BPF_STMT(BPF_ST, 0));
  for (const auto& w : peers) {
    // One block an address: on a mismatch, skip to the next block.
    const uint8_t n = uint8_t(w.size());
    const uint32_t src = w.size() == 1 ? 12 : 8;  // source address offset
    p.push_back(BPF_STMT(BPF_LD | BPF_MEM, 0));
    p.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, w.size() == 1 ? 4u : 6u, 0, uint8_t(2 * n + 1)));
    for (uint8_t i = 0; i < n; i++) {
      p.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, net + src + 4 * i));
      p.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, w[i], 0, uint8_t(2 * (n - i) - 1)));
    }
    p.push_back(BPF_STMT(BPF_RET | BPF_K, 0xffffffff));
  }
  p.push_back(BPF_STMT(BPF_RET | BPF_K, 0));
  sock_fprog prog{uint16_t(p.size()), p.data()};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) != 0) {
    throw std::runtime_error(std::string("filter the transport's connections: ") + strerror(errno));
  }
}

bool sameSockaddr(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    auto &x = reinterpret_cast<const sockaddr_in&>(a), &y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  auto &x = reinterpret_cast<const sockaddr_in6&>(a), &y = reinterpret_cast<const sockaddr_in6&>(b);
  return x.sin6_port == y.sin6_port && memcmp(&x.sin6_addr, &y.sin6_addr, sizeof(x.sin6_addr)) == 0;
}

// listenerOf finds the listening socket bound to addr among this process's
// descriptors: Gloo does not expose its pairs' sockets. The port is
// unique on the host, so no other socket can match.
int listenerOf(const sockaddr_storage& addr) {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) throw std::runtime_error(std::string("list this process's sockets: ") + strerror(errno));
  int found = -1;
  while (dirent* e = readdir(d)) {
    int fd = atoi(e->d_name);
    if (e->d_name[0] == '.' || fd == dirfd(d)) continue;
    int on = 0;
    socklen_t n = sizeof(on);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &n) != 0 || !on) continue;
    sockaddr_storage ss{};
    n = sizeof(ss);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &n) == 0 && sameSockaddr(ss, addr)) {
      found = fd;
      break;
    }
  }
  closedir(d);
  if (found < 0) throw std::runtime_error("a pair's listening socket was not found");
  return found;
}

bool sameIP(const sockaddr_storage& a, const sockaddr_storage& b) { return a.ss_family == b.ss_family && ipWords(a) == ipWords(b); }

// AdmitContext is Gloo's full-mesh rendezvous with each pair's listening
// socket filtered to its peer's address before the pair's address is
// published. Keys: "host/R" (rank R's transport address), "pairs/R" (its
// pairs' addresses, ranks in order, R skipped).
class AdmitContext : public gloo::rendezvous::Context {
 public:
  using gloo::rendezvous::Context::Context;

  void connect(gloo::rendezvous::Store& st, std::shared_ptr<gloo::transport::Device>& dev) {
    using gloo::transport::tcp::Address;
    auto tctx = dev->createContext(rank, size);
    tctx->setTimeout(getTimeout());
    std::vector<char> mine;
    std::vector<int> fds(size, -1);
    sockaddr_storage self{};
    for (int i = 0; i < size; i++) {
      if (i == rank) continue;
      auto& pair = tctx->createPair(i);
      auto b = pair->address().bytes();
      mine.insert(mine.end(), b.begin(), b.end());
      self = dynamic_cast<const Address&>(pair->address()).getSockaddr();
      fds[i] = listenerOf(self);
      admitOnly(fds[i], {});
    }
    st.set("host/" + std::to_string(rank), Address(self).bytes());
    std::vector<sockaddr_storage> hosts(size);
    for (int i = 0; i < size; i++) {
      if (i == rank) continue;
      std::string k = "host/" + std::to_string(i);
      st.wait({k}, getTimeout());
      hosts[i] = Address(st.get(k)).getSockaddr();
      admitOnly(fds[i], {ipWords(hosts[i])});
    }
    st.set("pairs/" + std::to_string(rank), mine);
    for (int i = 0; i < size; i++) {
      if (i == rank) continue;
      std::string k = "pairs/" + std::to_string(i);
      st.wait({k}, getTimeout());
      // Rank i's addresses are in rank order, i skipped; each is as long.
      auto all = st.get(k);
      size_t n = all.size() / (size - 1), at = rank > i ? rank - 1 : rank;
      std::vector<char> addr(all.begin() + at * n, all.begin() + (at + 1) * n);
      if (!sameIP(Address(addr).getSockaddr(), hosts[i])) {
        throw std::runtime_error("rank " + std::to_string(i) + " published a pair address on another host than its own");
      }
      tctx->getPair(i)->connect(addr);
    }
    device_ = dev;
    transportContext_ = std::move(tctx);
  }
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
    auto ctx = std::make_shared<AdmitContext>(rank, size);
    ctx->setTimeout(std::chrono::milliseconds(timeout_ms));
    GoStore st(store, std::chrono::milliseconds(timeout_ms));
    ctx->connect(st, g->dev);
    g->ctx = ctx;
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

// A ring reduce-scatter with a part per rank (counts). Gloo's
// ReduceScatterHalvingDoubling is an algorithm object that allocates and
// zeroes two buffer-sized vectors and registers its buffers on every pair
// each time it is built, and then sends up to 1/N of the buffer more to
// put the parts in rank order; this sends each part straight around the
// ring. Step s (of N-1): rank r sends its partial sum of part r-s-1 to
// rank r+1 and receives part r-s-2 from rank r-1, adding it to its own;
// after the last step it holds the whole sum of part r, in place. Each
// rank sends (N-1)/N of the buffer for equal parts. Part k's sum is
// x[k] + (x[k-1] + (... + x[k+1])): every element is added once, on one
// rank, in a fixed order (two ranks: the allreduce's sum, as addition
// commutes).
int hone_gloo_reduce_scatter(hone_gloo* g, float* buf, size_t n, const int* counts, int64_t timeout_ms, char** err) {
  if (!g->ctx) return broken(err);
  try {
    const int size = g->ctx->size, rank = g->ctx->rank;
    std::vector<size_t> off(size + 1, 0);
    size_t most = 1;
    for (int q = 0; q < size; q++) {
      off[q + 1] = off[q] + size_t(counts[q]);
      most = std::max(most, size_t(counts[q]));
    }
    if (off[size] != n) throw std::runtime_error("reduce-scatter: the counts do not sum to the buffer's length");
    if (g->scratch.size() < most) g->scratch.resize(most);
    float* tmp = g->scratch.data();
    const auto slot = gloo::Slot::build(kReduceScatterSlotPrefix, g->tag++);
    const auto timeout = std::chrono::milliseconds(timeout_ms);
    auto data = g->ctx->createUnboundBuffer(buf, std::max<size_t>(n, 1) * sizeof(float));
    auto recv = g->ctx->createUnboundBuffer(tmp, most * sizeof(float));
    const int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    for (int s = 0; s < size - 1; s++) {
      const int sp = ((rank - s - 1) % size + size) % size, rp = ((rank - s - 2) % size + size) % size;
      const size_t sn = size_t(counts[sp]), rn = size_t(counts[rp]);
      if (rn > 0) recv->recv(prev, slot, 0, rn * sizeof(float));
      if (sn > 0) data->send(next, slot, off[sp] * sizeof(float), sn * sizeof(float));
      if (rn > 0) {
        if (!recv->waitRecv(timeout)) throw std::runtime_error("reduce-scatter: receive aborted");
        float* dst = buf + off[rp];
        for (size_t i = 0; i < rn; i++) dst[i] += tmp[i];
      }
      // The part sent is added to in a later step (or is the result).
      if (sn > 0 && !data->waitSend(timeout)) throw std::runtime_error("reduce-scatter: send aborted");
    }
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

size_t hone_gloo_scratch_floats(hone_gloo* g) { return g->scratch.size(); }

void hone_gloo_close(hone_gloo* g) { delete g; }

}  // extern "C"
