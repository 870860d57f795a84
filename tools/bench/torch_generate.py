#!/usr/bin/env python3
"""PyTorch decode peer for `hone bench generate --peer torch`: a Llama-style
model of the same HF config (random weights: speed does not depend on their
values) in bf16, a key/value cache, one stream, greedy decoding. It prefills
the prompt, decodes one warm-up token, then times --new-tokens tokens.
Prints one JSON line.

Run with Debian's python3-torch: /usr/bin/python3 tools/bench/torch_generate.py
--config CONFIG.json --prompt-tokens 32 --new-tokens 64 --threads 2
"""
import argparse, json, math, os, sys, time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_blas import blas_report  # noqa: E402


class Layer:
    def __init__(self, c, g, dt):
        H, I = c["hidden_size"], c["intermediate_size"]
        self.nh = c["num_attention_heads"]
        self.nkv = c.get("num_key_value_heads", self.nh)
        self.hd = c.get("head_dim") or H // self.nh
        self.eps = c["rms_norm_eps"]
        w = lambda o, i: (torch.randn(o, i, generator=g) * 0.02).to(dt)
        self.q, self.k, self.v = w(self.nh * self.hd, H), w(self.nkv * self.hd, H), w(self.nkv * self.hd, H)
        self.o = w(H, self.nh * self.hd)
        self.gate, self.up, self.down = w(I, H), w(I, H), w(H, I)
        self.ln1, self.ln2 = torch.ones(H, dtype=dt), torch.ones(H, dtype=dt)


def rmsnorm(x, w, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def rope(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., h:], x[..., :h]), -1) * sin


class Model:
    def __init__(self, c, max_len, dt):
        g = torch.Generator().manual_seed(0)
        self.c = c
        self.emb = (torch.randn(c["vocab_size"], c["hidden_size"], generator=g) * 0.02).to(dt)
        self.layers = [Layer(c, g, dt) for _ in range(c["num_hidden_layers"])]
        self.norm = torch.ones(c["hidden_size"], dtype=dt)
        self.head = self.emb if c.get("tie_word_embeddings") else (torch.randn(c["vocab_size"], c["hidden_size"], generator=g) * 0.02).to(dt)
        l0 = self.layers[0]
        inv = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, l0.hd, 2).float() / l0.hd))
        f = torch.outer(torch.arange(max_len).float(), inv)
        e = torch.cat((f, f), -1)
        self.cos, self.sin = e.cos().to(dt), e.sin().to(dt)
        self.kc = [torch.zeros(l0.nkv, max_len, l0.hd, dtype=dt) for _ in self.layers]
        self.vc = [torch.zeros(l0.nkv, max_len, l0.hd, dtype=dt) for _ in self.layers]

    def forward(self, ids, start):
        """Runs tokens ids (T) at positions start.. against the cache; returns the last token's logits."""
        T = ids.shape[0]
        x = self.emb[ids]
        cos, sin = self.cos[start:start + T].unsqueeze(0), self.sin[start:start + T].unsqueeze(0)
        for l, kc, vc in zip(self.layers, self.kc, self.vc):
            h = rmsnorm(x, l.ln1, l.eps)
            q = (h @ l.q.t()).view(T, l.nh, l.hd).transpose(0, 1)
            k = (h @ l.k.t()).view(T, l.nkv, l.hd).transpose(0, 1)
            v = (h @ l.v.t()).view(T, l.nkv, l.hd).transpose(0, 1)
            kc[:, start:start + T] = rope(k, cos, sin)
            vc[:, start:start + T] = v
            q = rope(q, cos, sin)
            K, V = kc[:, :start + T], vc[:, :start + T]
            rep = l.nh // l.nkv
            K, V = K.repeat_interleave(rep, 0), V.repeat_interleave(rep, 0)
            att = (q @ K.transpose(-1, -2)).float() / math.sqrt(l.hd)
            if T > 1:
                att = att + torch.full((T, start + T), float("-inf")).triu(start + 1)
            y = (torch.softmax(att, -1).to(q.dtype) @ V).transpose(0, 1).reshape(T, -1)
            x = x + y @ l.o.t()
            h = rmsnorm(x, l.ln2, l.eps)
            x = x + (F.silu(h @ l.gate.t()) * (h @ l.up.t())) @ l.down.t()
        x = rmsnorm(x[-1:], self.norm, self.layers[0].eps)
        return (x @ self.head.t()).float()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    blas = blas_report()  # which BLAS this process's fp32 products run on
    c = json.load(open(a.config))
    dt = torch.bfloat16 if a.precision == "bf16" else torch.float32
    m = Model(c, a.prompt_tokens + a.new_tokens + 2, dt)
    prompt = torch.randint(0, c["vocab_size"], (a.prompt_tokens,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits = m.forward(prompt, 0)
        prefill = time.perf_counter() - t0
        n, ids = a.prompt_tokens, []
        for i in range(a.new_tokens + 1):  # the first is the warm-up
            if i == 1:
                t0 = time.perf_counter()
            tok = int(torch.argmax(logits))
            ids.append(tok)
            logits = m.forward(torch.tensor([tok]), n)
            n += 1
        dur = time.perf_counter() - t0
    print(json.dumps({
        "engine": "pytorch " + torch.__version__, "blas": blas, "precision": a.precision, "threads": a.threads,
        "prompt_tokens": a.prompt_tokens, "new_tokens": a.new_tokens, "tokens_per_s": a.new_tokens / dur,
        "decode_seconds": dur, "prefill_seconds": prefill, "token_ids": ids,
    }))


if __name__ == "__main__":
    main()
