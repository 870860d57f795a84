#!/usr/bin/env python3
"""Write the AdamW fixture: several torch.optim.AdamW steps over a tiny Llama's
parameters, with gradient clipping, a warmup-then-decay learning rate and
weight decay on matrices only.

The gradients are given (seeded random values scaled to a chosen global norm,
so clipping is active on some steps and not on others), not computed from a
loss: the fixture checks the optimizer, and the engine's gradients have their
own parity fixtures. The update runs in float64; the Go test runs float32
kernels and compares every step's parameters.

Usage:
    /usr/bin/python3 tools/reference/adamw_reference.py --out optim/testdata/adamw.json
"""

import argparse
import json
import math

import torch

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 12, "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-5,
    "attention_bias": True, "mlp_bias": True, "tie_word_embeddings": False,
}
ADAMW = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "max_grad_norm": 1.0}
SCHEDULE = {"total_steps": 5, "warmup_steps": 2, "decay": "linear", "final_mult": 0.1}
# The global gradient norm of each step before clipping: above max_grad_norm
# on steps 0, 2 and 4, below it on steps 1 and 3.
GRAD_NORMS = [2.5, 0.5, 3.0, 0.8, 1.6]
SEED = 20261130


def param_shapes(c):
    """HF Llama parameter names and shapes, in the model's order."""
    C, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    D = C // c["num_attention_heads"]
    Q, KV = c["num_attention_heads"] * D, c["num_key_value_heads"] * D
    out = [("model.embed_tokens.weight", (V, C))]
    for i in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % i
        out.append((p + "input_layernorm.weight", (C,)))
        for name, o, i_ in [("q_proj", Q, C), ("k_proj", KV, C), ("v_proj", KV, C), ("o_proj", C, Q)]:
            out.append((p + "self_attn.%s.weight" % name, (o, i_)))
            if c["attention_bias"]:
                out.append((p + "self_attn.%s.bias" % name, (o,)))
        out.append((p + "post_attention_layernorm.weight", (C,)))
        for name, o, i_ in [("gate_proj", F, C), ("up_proj", F, C), ("down_proj", C, F)]:
            out.append((p + "mlp.%s.weight" % name, (o, i_)))
            if c["mlp_bias"]:
                out.append((p + "mlp.%s.bias" % name, (o,)))
    out.append(("model.norm.weight", (C,)))
    if not c["tie_word_embeddings"]:
        out.append(("lm_head.weight", (V, C)))
    return out


def lr_at(i):
    """Linear warmup to the peak (reached at the last warmup step), then linear
    decay to peak*final_mult at total_steps, written from the definition."""
    s, peak = SCHEDULE, ADAMW["lr"]
    w, t = s["warmup_steps"], s["total_steps"]
    if i < w:
        return peak * (i + 1) / w
    frac = min(1.0, (i - w) / (t - w))
    return peak * (s["final_mult"] + (1 - s["final_mult"]) * (1 - frac))


def f32(x):
    """A float32 value as the shortest decimal that reads back to it."""
    return float("%.9g" % x)


def values(t, as_f32=False):
    flat = t.detach().reshape(-1).tolist()
    return [f32(x) for x in flat] if as_f32 else flat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(SEED)

    shapes = param_shapes(CONFIG)
    params, entries = [], []
    for name, shape in shapes:
        if name.endswith("norm.weight"):
            init = 1 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith(".bias"):
            init = 0.1 * torch.randn(shape, generator=g)
        else:
            init = 0.5 * torch.randn(shape, generator=g)
        init = init.to(torch.float32)  # the Go side starts from these float32 values exactly
        p = torch.nn.Parameter(init.to(torch.float64))
        params.append(p)
        # As the project does: matrices (embeddings, projections) decay;
        # norms and biases do not.
        entries.append({"name": name, "shape": list(shape), "decay": len(shape) >= 2, "init": values(init, True)})

    decay = [p for p, e in zip(params, entries) if e["decay"]]
    no_decay = [p for p, e in zip(params, entries) if not e["decay"]]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": ADAMW["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=ADAMW["lr"], betas=(ADAMW["beta1"], ADAMW["beta2"]), eps=ADAMW["eps"], foreach=False)

    steps = []
    for i, target in enumerate(GRAD_NORMS):
        raw = [torch.randn(p.shape, generator=g) for p in params]
        scale = target / math.sqrt(sum(float((r.double() ** 2).sum()) for r in raw))
        grads = [(r * scale).to(torch.float32) for r in raw]
        for p, gr in zip(params, grads):
            p.grad = gr.to(torch.float64)
        norm = float(torch.nn.utils.clip_grad_norm_(params, ADAMW["max_grad_norm"]))
        lr = lr_at(i)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        step = {"lr": lr, "grad_norm": norm, "clipped": norm > ADAMW["max_grad_norm"],
                "grads": {e["name"]: values(gr, True) for e, gr in zip(entries, grads)},
                "params": {e["name"]: values(p) for e, p in zip(entries, params)}}
        if i == len(GRAD_NORMS) - 1:
            step["exp_avg"] = {e["name"]: values(opt.state[p]["exp_avg"]) for e, p in zip(entries, params)}
            step["exp_avg_sq"] = {e["name"]: values(opt.state[p]["exp_avg_sq"]) for e, p in zip(entries, params)}
        steps.append(step)

    assert any(s["clipped"] for s in steps) and not all(s["clipped"] for s in steps)
    out = {"torch_version": torch.__version__, "config": CONFIG, "adamw": ADAMW, "schedule": SCHEDULE,
           "params": entries, "steps": steps}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
