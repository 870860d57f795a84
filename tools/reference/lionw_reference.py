#!/usr/bin/env python3
"""Write the LionW fixture: five DecoupledLionW steps (float64) over the same
tiny Llama's parameters as the AdamW fixture, with gradient clipping, a
warmup-then-decay learning rate and weight decay on matrices only.

DecoupledLionW (composer / llm-foundry, the hosted product's optimizer) is
written here from its definition, per parameter, with the peak learning rate
as initial_lr:

    p   <- p * (1 - (lr / initial_lr) * wd)            (decayed parameters)
    p   <- p - lr * sign(beta1 * m + (1 - beta1) * g)   (torch.sign: 0 at 0)
    m   <- beta2 * m + (1 - beta2) * g

Some gradient entries of step 0 are exactly zero: the moment starts at zero,
so their update is sign(0) = 0 and only the decay moves them.

Usage:
    /usr/bin/python3 tools/reference/lionw_reference.py --out optim/testdata/lionw.json
"""

import argparse
import json
import math

import torch

from adamw_reference import CONFIG, param_shapes, values

LIONW = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.05, "max_grad_norm": 1.0}
SCHEDULE = {"total_steps": 5, "warmup_steps": 2, "decay": "linear", "final_mult": 0.1}
GRAD_NORMS = [2.5, 0.5, 3.0, 0.8, 1.6]
ZERO_EVERY = 7  # step 0: every 7th gradient entry of each parameter is 0
SEED = 20261207


def lr_at(i):
    """Linear warmup to the peak (reached at the last warmup step), then linear
    decay to peak*final_mult at total_steps."""
    s, peak = SCHEDULE, LIONW["lr"]
    w, t = s["warmup_steps"], s["total_steps"]
    if i < w:
        return peak * (i + 1) / w
    frac = min(1.0, (i - w) / (t - w))
    return peak * (s["final_mult"] + (1 - s["final_mult"]) * (1 - frac))


def lionw_step(p, g, m, lr, initial_lr, wd, beta1, beta2):
    if wd != 0:
        p.mul_(1 - (lr / initial_lr) * wd)
    p.add_(torch.sign(beta1 * m + (1 - beta1) * g), alpha=-lr)
    m.mul_(beta2).add_(g, alpha=1 - beta2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(SEED)

    params, entries = [], []
    for name, shape in param_shapes(CONFIG):
        if name.endswith("norm.weight"):
            init = 1 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            init = 0.1 * torch.randn(shape, generator=g)
        else:
            init = 0.5 * torch.randn(shape, generator=g)
        init = init.to(torch.float32)
        params.append(init.to(torch.float64))
        entries.append({"name": name, "shape": list(shape), "decay": len(shape) >= 2, "init": values(init, True)})
    moments = [torch.zeros_like(p) for p in params]

    steps, zeroed = [], 0
    for i, target in enumerate(GRAD_NORMS):
        raw = [torch.randn(p.shape, generator=g) for p in params]
        if i == 0:
            for r in raw:
                flat = r.view(-1)
                flat[::ZERO_EVERY] = 0
                zeroed += flat[::ZERO_EVERY].numel()
        scale = target / math.sqrt(sum(float((r.double() ** 2).sum()) for r in raw))
        grads = [(r * scale).to(torch.float32) for r in raw]
        g64 = [gr.to(torch.float64) for gr in grads]
        norm = math.sqrt(sum(float((x ** 2).sum()) for x in g64))
        clip = LIONW["max_grad_norm"] / (norm + 1e-6)  # as clip_grad_norm_
        if clip < 1:
            g64 = [x * clip for x in g64]
        lr = lr_at(i)
        for p, x, m, e in zip(params, g64, moments, entries):
            wd = LIONW["weight_decay"] if e["decay"] else 0.0
            lionw_step(p, x, m, lr, LIONW["lr"], wd, LIONW["beta1"], LIONW["beta2"])
        step = {"lr": lr, "grad_norm": norm, "clipped": norm > LIONW["max_grad_norm"],
                "grads": {e["name"]: values(gr, True) for e, gr in zip(entries, grads)},
                "params": {e["name"]: values(p) for e, p in zip(entries, params)},
                "exp_avg": {e["name"]: values(m) for e, m in zip(entries, moments)}}
        steps.append(step)

    assert zeroed > 0
    assert any(s["clipped"] for s in steps) and not all(s["clipped"] for s in steps)
    out = {"torch_version": torch.__version__, "config": CONFIG, "lionw": LIONW, "schedule": SCHEDULE,
           "zero_every": ZERO_EVERY, "params": entries, "steps": steps}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
