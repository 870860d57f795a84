#!/usr/bin/env python3
"""PyTorch LoRA peer for `hone bench train --lora-rank R`: the model of
torch_train.py (same HF config fields, random weights), its base frozen, LoRA
adapters y = W x + (alpha/r) * B (A x) on the same projections as hone (A
kaiming-uniform as PEFT initialises it, B zero, no dropout), autocast bf16,
AdamW with global-norm clipping over the adapter weights only, one optimizer
step per batch, one warm-up step, median step time. With --precision bf16 the
frozen base is held in bf16 (as a PEFT user loads it with torch_dtype=bfloat16,
and as hone holds it); the adapter weights stay fp32. Prints one JSON line.

Run with Debian's python3-torch: /usr/bin/python3 tools/bench/torch_lora.py
--config CONFIG.json --seq 256 --batch 4 --steps 10 --precision bf16 --lora-rank 16
"""
import argparse, json, math, os, resource, statistics, sys, time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_blas import blas_report  # noqa: E402
from torch_train import Model  # noqa: E402

# hone's (PEFT's) target names and the attribute of torch_train's Layer.
TARGETS = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}


class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.empty(r, base.in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.A.t()) @ self.B.t() * self.scale


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=0, help="0 = 2 x rank")
    ap.add_argument("--lora-targets", default=",".join(TARGETS))
    ap.add_argument("--base-dtype", default="", choices=["", "bf16", "fp32"],
                    help="dtype of the frozen base (default: bf16 with --precision bf16, else fp32)")
    a = ap.parse_args()
    alpha = a.lora_alpha or 2.0 * a.lora_rank
    targets = [t for t in a.lora_targets.split(",") if t]
    for t in targets:
        if t not in TARGETS:
            sys.exit("unknown LoRA target %r (want %s)" % (t, ",".join(TARGETS)))
    torch.set_num_threads(a.threads)
    blas = blas_report()  # which BLAS this process's fp32 products run on
    torch.manual_seed(0)
    c = json.load(open(a.config))
    m = Model(c)
    base16 = (a.base_dtype or a.precision) == "bf16"
    if base16:
        m = m.to(torch.bfloat16)
    for p in m.parameters():
        p.requires_grad_(False)
    for layer in m.layers:
        for t in targets:
            setattr(layer, TARGETS[t], LoRALinear(getattr(layer, TARGETS[t]), a.lora_rank, alpha))
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    ids = torch.randint(0, c["vocab_size"], (a.batch, a.seq))
    times, losses = [], []
    for i in range(a.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            loss = m(ids)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if i > 0:
            times.append(time.perf_counter() - t0)
            losses.append(loss.item())
    med = statistics.median(times)
    print(json.dumps({
        "engine": "pytorch " + torch.__version__, "blas": blas, "method": "lora", "precision": a.precision, "threads": a.threads,
        "params": sum(p.numel() for p in m.parameters() if not p.requires_grad), "trainable_params": sum(p.numel() for p in params),
        "lora_rank": a.lora_rank, "lora_targets": targets, "frozen_bf16": base16,
        "seq": a.seq, "batch": a.batch, "steps": a.steps,
        "tokens_per_s": a.seq * a.batch / med, "step_seconds": times,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "losses": losses,
    }))


if __name__ == "__main__":
    main()
