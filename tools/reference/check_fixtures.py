#!/usr/bin/env python3
"""Reload the parity fixtures written by llama_reference.py and verify them.

Independent of the writer: parses safetensors with plain struct/json/numpy and
checks header layout, tensor names and shapes against config.json, batch shapes,
finiteness, and recomputes the loss from logits.safetensors + batch.json.

Usage:
    /usr/bin/python3 tools/reference/check_fixtures.py [engine/testdata/parity]
"""

import json
import os
import struct
import sys

import numpy as np

CASES = ["gqa", "tied_llama3", "bias_packed", "mistral", "mixtral", "mixtral_aux", "dbrx", "dbrx_p2", "single"]


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    assert (8 + n) % 8 == 0, "data section not 8-byte aligned"
    data = raw[8 + n:]
    meta = header.pop("__metadata__", None)
    assert meta == {"format": "pt"}, meta
    names = list(header)
    assert names == sorted(names), "tensors not in sorted order"
    out = {}
    expect = 0
    for name in names:
        h = header[name]
        assert h["dtype"] == "F32", (name, h["dtype"])
        b, e = h["data_offsets"]
        assert b == expect, "gap/overlap before %s" % name
        count = int(np.prod(h["shape"])) if h["shape"] else 1
        assert e - b == 4 * count, "size mismatch for %s" % name
        arr = np.frombuffer(data[b:e], dtype="<f4").reshape(h["shape"])
        assert np.all(np.isfinite(arr)), "non-finite values in %s" % name
        out[name] = arr
        expect = e
    assert expect == len(data), "trailing bytes after tensor data"
    return out


def expected_dbrx_params(cfg):
    V, H, hd = cfg["vocab_size"], cfg["d_model"], cfg["d_model"] // cfg["n_heads"]
    kvd = cfg["attn_config"]["kv_n_heads"] * hd
    EF = cfg["ffn_config"]["moe_num_experts"] * cfg["ffn_config"]["ffn_hidden_size"]
    exp = {"transformer.wte.weight": [V, H], "transformer.norm_f.weight": [H]}
    if not cfg["tie_word_embeddings"]:
        exp["lm_head.weight"] = [V, H]
    for i in range(cfg["n_layers"]):
        p = "transformer.blocks.%d." % i
        exp.update({p + "norm_attn_norm.norm_1.weight": [H], p + "norm_attn_norm.norm_2.weight": [H],
                    p + "norm_attn_norm.attn.Wqkv.weight": [H + 2 * kvd, H],
                    p + "norm_attn_norm.attn.out_proj.weight": [H, H],
                    p + "ffn.router.layer.weight": [cfg["ffn_config"]["moe_num_experts"], H]})
        for m in ("w1", "v1", "w2"):
            exp[p + "ffn.experts.mlp." + m] = [EF, H]
    return exp


def expected_params(cfg):
    if cfg["model_type"] == "dbrx":
        return expected_dbrx_params(cfg)
    V, H, I = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    nH, nKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nH
    exp = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
    if not cfg["tie_word_embeddings"]:
        exp["lm_head.weight"] = [V, H]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        exp[p + "input_layernorm.weight"] = [H]
        exp[p + "post_attention_layernorm.weight"] = [H]
        for n, rows in (("q", nH * hd), ("k", nKV * hd), ("v", nKV * hd), ("o", H)):
            cols = nH * hd if n == "o" else H
            exp[p + "self_attn.%s_proj.weight" % n] = [rows, cols]
            if cfg.get("attention_bias"):
                exp[p + "self_attn.%s_proj.bias" % n] = [rows]
        if cfg["model_type"] == "mixtral":
            E = cfg["num_local_experts"]
            exp[p + "block_sparse_moe.gate.weight"] = [E, H]
            for e in range(E):
                q = p + "block_sparse_moe.experts.%d." % e
                exp[q + "w1.weight"], exp[q + "w2.weight"], exp[q + "w3.weight"] = [I, H], [H, I], [I, H]
            continue
        for n, rows, cols in (("gate", I, H), ("up", I, H), ("down", H, I)):
            exp[p + "mlp.%s_proj.weight" % n] = [rows, cols]
            if cfg["mlp_bias"]:
                exp[p + "mlp.%s_proj.bias" % n] = [rows]
    return exp


def recompute_loss(logits, labels, seg):
    logits = logits.astype(np.float64)
    B, T, V = logits.shape
    total, count = 0.0, 0
    for b in range(B):
        for t in range(T - 1):
            y = labels[b][t + 1]
            if y == -100:
                continue
            if seg is not None and seg[b][t] != seg[b][t + 1]:
                continue
            row = logits[b, t]
            m = row.max()
            total += m + np.log(np.exp(row - m).sum()) - row[y]
            count += 1
    return total / count, count


def check_case(root, name):
    d = os.path.join(root, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    arch = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
            "mixtral": "MixtralForCausalLM", "dbrx": "DbrxForCausalLM"}[cfg["model_type"]]
    assert cfg["architectures"] == [arch]
    assert (cfg["model_type"] == "mistral") == (name == "mistral")
    assert (cfg["model_type"] == "mixtral") == name.startswith("mixtral")
    with open(os.path.join(d, "batch.json")) as f:
        batch = json.load(f)
    ids = np.array(batch["input_ids"])
    labels = np.array(batch["labels"])
    assert ids.ndim == 2 and labels.shape == ids.shape
    assert ids.min() >= 0 and ids.max() < cfg["vocab_size"]
    seg = batch.get("segment_ids")
    if seg is not None:
        seg = np.array(seg)
        assert seg.shape == ids.shape
    assert (seg is not None) == (name in ("bias_packed", "mistral", "mixtral", "mixtral_aux", "dbrx", "dbrx_p2")), \
        "segment_ids only in the packed cases"
    B, T = ids.shape

    model = read_safetensors(os.path.join(d, "model.safetensors"))
    exp = expected_params(cfg)
    assert set(model) == set(exp), "param names differ: %s" % (set(model) ^ set(exp))
    for k, shape in exp.items():
        assert list(model[k].shape) == shape, (k, model[k].shape, shape)

    grads = read_safetensors(os.path.join(d, "grads.safetensors"))
    assert set(grads) == set(exp) | {"loss"}, "grad names differ"
    assert grads["loss"].shape == (), grads["loss"].shape
    zero = []
    for k, shape in exp.items():
        assert list(grads[k].shape) == shape, (k, grads[k].shape, shape)
        if np.abs(grads[k]).max() == 0:
            zero.append(k)
    # only an expert no token was routed to may have a zero gradient
    assert all(".experts." in k for k in zero), "all-zero gradient for %s" % zero
    assert bool(zero) == (name == "mixtral_aux"), "mixtral_aux must leave an expert without tokens: %s" % zero

    logits = read_safetensors(os.path.join(d, "logits.safetensors"))
    assert set(logits) == {"logits"}
    lg = logits["logits"]
    assert lg.shape == (B, T, cfg["vocab_size"]), lg.shape

    loss, count = recompute_loss(lg, labels, seg)
    stored = float(grads["loss"])
    if cfg.get("output_router_logits"):
        # the stored loss adds the coefficient x the load-balancing loss (>= the coefficient)
        coef = cfg["ffn_config"]["moe_loss_weight"] if name.startswith("dbrx") else cfg["router_aux_loss_coef"]
        assert stored - loss >= 0.99 * coef, (loss, stored)
    else:
        assert abs(loss - stored) < 1e-5 * max(1.0, abs(stored)), (loss, stored)
    print("%-12s OK  B=%d T=%d V=%d params=%d counted=%d loss=%.7f (recomputed %.7f)"
          % (name, B, T, cfg["vocab_size"], len(model), count, stored, loss))


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "engine/testdata/parity"
    for name in CASES:
        check_case(root, name)
    print("all fixtures OK")


if __name__ == "__main__":
    main()
