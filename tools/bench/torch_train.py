#!/usr/bin/env python3
"""PyTorch peer for `hone bench train`: the same Llama-style model (HF config
fields), random tokens, AdamW with global-norm clipping, one optimizer step per
batch, one warm-up step, median step time. Prints one JSON line.

Run with Debian's python3-torch: /usr/bin/python3 tools/bench/torch_train.py
--config CONFIG.json --seq 256 --batch 4 --steps 10 --precision fp32|bf16
"""
import argparse, json, math, os, sys, resource, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_blas import blas_report  # noqa: E402


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        H, hd = c["hidden_size"], c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        self.nh, self.nkv, self.hd = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"]), hd
        self.ln1, self.ln2 = RMSNorm(H, c["rms_norm_eps"]), RMSNorm(H, c["rms_norm_eps"])
        self.q = nn.Linear(H, self.nh * hd, bias=False)
        self.k = nn.Linear(H, self.nkv * hd, bias=False)
        self.v = nn.Linear(H, self.nkv * hd, bias=False)
        self.o = nn.Linear(self.nh * hd, H, bias=False)
        I = c["intermediate_size"]
        self.gate, self.up, self.down = nn.Linear(H, I, bias=False), nn.Linear(H, I, bias=False), nn.Linear(I, H, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.ln1(x)
        q = self.q(h).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v(h).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd) + mask
        att = torch.softmax(att.float(), -1).to(q.dtype)
        y = (att @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + self.o(y)
        h = self.ln2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.emb = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.head = None if c.get("tie_word_embeddings") else nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, 0, 0.02)

    def forward(self, ids):
        T = ids.shape[1]
        hd = self.layers[0].hd
        inv = 1.0 / (self.c.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2).float() / hd))
        f = torch.outer(torch.arange(T).float(), inv)
        e = torch.cat((f, f), -1)
        cos, sin = e.cos(), e.sin()
        mask = torch.full((T, T), float("-inf")).triu(1)
        x = self.emb(ids)
        for l in self.layers:
            x = l(x, cos, sin, mask)
        x = self.norm(x)
        w = self.emb.weight if self.head is None else self.head.weight
        logits = x @ w.t()
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    blas = blas_report()  # which BLAS this process's fp32 products run on
    torch.manual_seed(0)
    c = json.load(open(a.config))
    m = Model(c)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.randint(0, c["vocab_size"], (a.batch, a.seq))
    times, losses = [], []
    for i in range(a.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = m(ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        if i > 0:
            times.append(time.perf_counter() - t0)
            losses.append(loss.item())
    med = statistics.median(times)
    print(json.dumps({
        "engine": "pytorch " + torch.__version__, "blas": blas, "precision": a.precision, "threads": a.threads,
        "params": sum(p.numel() for p in m.parameters()), "seq": a.seq, "batch": a.batch, "steps": a.steps,
        "tokens_per_s": a.seq * a.batch / med, "step_seconds": times,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "losses": losses,
    }))


if __name__ == "__main__":
    main()
