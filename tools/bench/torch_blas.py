"""Which BLAS backs PyTorch's fp32 matrix products, for the peer scripts' JSON.

Debian's python3-torch runs fp32 products through libblas.so.3, and which
library that is depends on update-alternatives: the reference BLAS (libblas3,
about 5 GFLOP/s on a 1024-square product) unless an optimized one such as
libopenblas0-pthread is installed (about 83 on the same machine). A peer
figure taken on the reference BLAS measures that library, not PyTorch, so
blas_report says which one this process loaded, times a 512-square fp32
product, and warns on stderr when it is the reference BLAS.
"""
import glob, os, sys, time

import torch


def _mapped_libblas():
    """The resolved path of the libblas.so.3 this process has mapped, or ''."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and os.path.basename(parts[5].strip()).startswith("libblas.so"):
                    return os.path.realpath(parts[5].strip())
    except OSError:
        pass
    return ""


def _alternative():
    """Where update-alternatives points libblas.so.3 (the system's choice), or ''."""
    for link in sorted(glob.glob("/etc/alternatives/libblas.so.3*")):
        return os.path.realpath(link)
    return ""


def _name(path):
    p = path.lower()
    if not p:
        return "unknown (no libblas.so.3 loaded)"
    if "openblas" in p:
        d = os.path.basename(os.path.dirname(p))  # Debian's openblas-pthread, -openmp, -serial
        return d if d.startswith("openblas") else "openblas"
    if "/blas/libblas.so" in p:
        return "reference"
    for n in ("blis", "atlas", "mkl"):
        if n in p:
            return n
    return os.path.basename(path)


def _probe(n=512, min_seconds=0.2):
    """GFLOP/s of the fastest n-square fp32 product timed over min_seconds (at least 3)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best, count, start = float("inf"), 0, time.perf_counter()
    while count < 3 or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
        count += 1
    return 2 * n ** 3 / best / 1e9


def blas_report():
    """The "blas" object of a peer's JSON line; call after torch.set_num_threads."""
    path = _mapped_libblas()
    r = {
        "library": _name(path),
        "path": path,
        "alternative": _alternative(),
        "fp32_512_gflop_per_s": round(_probe(), 2),
    }
    r["reference"] = r["library"] == "reference"
    if r["reference"]:
        bar = "!" * 78
        print("%s\nWARNING: PyTorch's fp32 matrix products run on the reference BLAS (%s):\n"
              "%.1f GFLOP/s on a 512-square product. fp32 figures taken like this measure that\n"
              "library, not PyTorch. Install an optimized BLAS first: tools/bench/install-peers.sh\n"
              "(libopenblas0-pthread).\n%s" % (bar, path, r["fp32_512_gflop_per_s"], bar), file=sys.stderr)
    return r
