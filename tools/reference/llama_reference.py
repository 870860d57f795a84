#!/usr/bin/env python3
"""Independent float64 PyTorch reference for the Llama causal-LM forward/backward.

Re-implements the math of Hugging Face LlamaForCausalLM from first principles in
plain torch (transformers is deliberately not used) and writes small parity
fixtures: config.json, model.safetensors, batch.json, grads.safetensors and
logits.safetensors for each case.

Usage:
    /usr/bin/python3 tools/reference/llama_reference.py --out engine/testdata/parity

Deterministic: fixed seeds, single-threaded torch, sorted safetensors headers;
re-running produces byte-identical files.
"""

import argparse
import json
import math
import os
import re
import struct
import sys

import torch

IGNORE_INDEX = -100


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

def base_config(**kw):
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": None,
        "hidden_size": None,
        "intermediate_size": None,
        "num_hidden_layers": None,
        "num_attention_heads": None,
        "num_key_value_heads": None,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }
    head_dim = kw.pop("head_dim", None)
    cfg.update(kw)
    if head_dim is not None:
        # insert head_dim right after num_key_value_heads for readability
        out = {}
        for k, v in cfg.items():
            out[k] = v
            if k == "num_key_value_heads":
                out["head_dim"] = head_dim
        cfg = out
    for k, v in cfg.items():
        if v is None and k not in ("rope_scaling", "sliding_window"):
            raise ValueError("config key %s unset" % k)
    return cfg


def mixtral_config(aux, window):
    cfg = base_config(architectures=["MixtralForCausalLM"], model_type="mixtral",
                      vocab_size=64, hidden_size=32, intermediate_size=40,
                      num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, rope_theta=1000000.0,
                      max_position_embeddings=64, sliding_window=window,
                      num_local_experts=4, num_experts_per_tok=2,
                      output_router_logits=aux, router_aux_loss_coef=0.05,
                      router_jitter_noise=0.0)
    del cfg["attention_bias"], cfg["mlp_bias"]   # MixtralConfig has neither
    return cfg


def find_routing_seed(cfg, seed, ids, seg, want_empty):
    """The first weight seed from seed on (in steps of 100) whose routing
    check_routing accepts: deterministic, so fixtures regenerate identically."""
    for s in range(seed, seed + 100 * 200, 100):
        P = {k: v.to(torch.float64) for k, v in init_params(cfg, s).items()}
        rl = []
        forward(cfg, P, ids, seg, router_logits=rl)
        if check_routing(cfg, rl, want_empty) is not None:
            return s
    raise AssertionError("no seed gives the routing the case needs")


def random_ids(gen, b, t, vocab):
    return torch.randint(0, vocab, (b, t), generator=gen, dtype=torch.int64)


def make_cases():
    cases = []

    # 1. gqa
    cfg = base_config(vocab_size=96, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, rope_theta=10000.0,
                      rms_norm_eps=1e-5)
    g = torch.Generator().manual_seed(1001)
    ids = random_ids(g, 2, 12, cfg["vocab_size"])
    labels = ids.clone()
    labels[0, :3] = IGNORE_INDEX
    cases.append(("gqa", cfg, 11, ids, labels, None))

    # 2. tied_llama3
    cfg = base_config(vocab_size=80, hidden_size=48, intermediate_size=96,
                      num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16,
                      tie_word_embeddings=True, rope_theta=500000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                    "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 64},
                      max_position_embeddings=512, rms_norm_eps=1e-6,
                      eos_token_id=[2, 3])
    g = torch.Generator().manual_seed(1002)
    ids = random_ids(g, 2, 24, cfg["vocab_size"])
    labels = ids.clone()
    labels[1, 20:] = IGNORE_INDEX
    cases.append(("tied_llama3", cfg, 12, ids, labels, None))

    # 3. bias_packed
    cfg = base_config(vocab_size=64, hidden_size=32, intermediate_size=48,
                      num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=1, attention_bias=True,
                      mlp_bias=True,
                      rope_scaling={"type": "linear", "factor": 2.0},
                      rope_theta=10000.0)
    g = torch.Generator().manual_seed(1003)
    ids = random_ids(g, 2, 16, cfg["vocab_size"])
    seg = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2],
                        [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]],
                       dtype=torch.int64)
    labels = ids.clone()
    labels[0, 7] = IGNORE_INDEX    # inside document 1 of row 0
    labels[0, 12] = IGNORE_INDEX   # second token of document 2 of row 0
    labels[1, 3] = IGNORE_INDEX    # inside document 0 of row 1
    labels[1, 10] = IGNORE_INDEX   # second token of document 1 of row 1
    cases.append(("bias_packed", cfg, 13, ids, labels, seg))

    # 5. mistral: Llama math plus sliding-window attention. The window (4)
    # is shorter than every document, so it hides keys inside documents;
    # GQA and packed rows as in bias_packed.
    cfg = base_config(architectures=["MistralForCausalLM"], model_type="mistral",
                      vocab_size=72, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, rope_theta=1000000.0,
                      sliding_window=4, max_position_embeddings=64)
    g = torch.Generator().manual_seed(1005)
    ids = random_ids(g, 2, 14, cfg["vocab_size"])
    seg = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
                        [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]],
                       dtype=torch.int64)
    labels = ids.clone()
    labels[0, 2] = IGNORE_INDEX
    labels[1, 6] = IGNORE_INDEX
    cases.append(("mistral", cfg, 15, ids, labels, seg))

    # 6. mixtral: top-2 of 4 experts, GQA, packed rows, no aux loss.
    # 7. mixtral_aux: the load-balancing loss on, a sliding window, and
    # routing in which some layer leaves an expert without tokens (few
    # tokens, so a seed that does so is found quickly).
    for name, seed0, aux, window, seg, want_empty in (
            ("mixtral", 16, False, None,
             [[0] * 7 + [1] * 5, [0] * 4 + [1] * 8], False),
            ("mixtral_aux", 17, True, 3,
             [[0] * 4 + [1] * 5], True)):
        cfg = mixtral_config(aux, window)
        g = torch.Generator().manual_seed(1000 + seed0)
        seg = torch.tensor(seg, dtype=torch.int64)
        ids = random_ids(g, seg.shape[0], seg.shape[1], cfg["vocab_size"])
        labels = ids.clone()
        labels[0, 3] = IGNORE_INDEX
        labels[-1, 7] = IGNORE_INDEX
        seed = find_routing_seed(cfg, seed0, ids, seg, want_empty)
        cases.append((name, cfg, seed, ids, labels, seg))

    # 8. dbrx: LayerNorm, fused Wqkv with clip_qkv clamping some values,
    # top-2 of 4 experts over their 1-norm, the aux loss on, GQA, packed.
    # 9. dbrx_p2: no clamp, the chosen weights over their 2-norm, top-3,
    # no aux loss, tied embeddings.
    for name, seed0, clip, p_norm, aux, tied, top_k in (
            ("dbrx", 18, 0.12, 1.0, True, False, 2),
            ("dbrx_p2", 19, None, 2.0, False, True, 3)):
        cfg = dbrx_config(name, clip, p_norm, aux, tied, top_k)
        g = torch.Generator().manual_seed(1000 + seed0)
        seg = torch.tensor([[0] * 6 + [1] * 6, [0] * 12], dtype=torch.int64)
        ids = random_ids(g, 2, 12, cfg["vocab_size"])
        labels = ids.clone()
        labels[0, 2] = IGNORE_INDEX
        cases.append((name, cfg, find_dbrx_seed(cfg, seed0, ids, seg), ids, labels, seg))

    # 4. single
    cfg = base_config(vocab_size=32, hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2)
    g = torch.Generator().manual_seed(1004)
    ids = random_ids(g, 1, 5, cfg["vocab_size"])
    labels = ids.clone()
    cases.append(("single", cfg, 14, ids, labels, None))

    return cases


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------

def head_dim_of(cfg):
    if cfg.get("head_dim") is not None:
        return int(cfg["head_dim"])
    return cfg["hidden_size"] // cfg["num_attention_heads"]


def param_shapes(cfg):
    """Ordered list of (HF name, shape) for every parameter."""
    if cfg.get("model_type") == "dbrx":
        return dbrx_param_shapes(cfg)
    V, H, I = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    nH, nKV, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg)
    out = [("model.embed_tokens.weight", (V, H))]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        out.append((p + "input_layernorm.weight", (H,)))
        for name, rows in (("q", nH * hd), ("k", nKV * hd), ("v", nKV * hd)):
            out.append((p + "self_attn.%s_proj.weight" % name, (rows, H)))
            if cfg.get("attention_bias"):
                out.append((p + "self_attn.%s_proj.bias" % name, (rows,)))
        out.append((p + "self_attn.o_proj.weight", (H, nH * hd)))
        if cfg.get("attention_bias"):
            out.append((p + "self_attn.o_proj.bias", (H,)))
        out.append((p + "post_attention_layernorm.weight", (H,)))
        if is_moe(cfg):
            E = cfg["num_local_experts"]
            out.append((p + "block_sparse_moe.gate.weight", (E, H)))
            for e in range(E):
                q = p + "block_sparse_moe.experts.%d." % e
                out += [(q + "w1.weight", (I, H)), (q + "w2.weight", (H, I)), (q + "w3.weight", (I, H))]
            continue
        for name, shape in (("gate", (I, H)), ("up", (I, H)), ("down", (H, I))):
            out.append((p + "mlp.%s_proj.weight" % name, shape))
            if cfg.get("mlp_bias"):
                out.append((p + "mlp.%s_proj.bias" % name, (shape[0],)))
    out.append(("model.norm.weight", (H,)))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (V, H)))
    return out


def init_params(cfg, seed):
    """float32 weights from a seeded generator (generated in module order)."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in param_shapes(cfg):
        noise = torch.randn(shape, generator=g, dtype=torch.float32)
        if name.endswith("layernorm.weight") or name == "model.norm.weight" or DBRX_NORM.search(name):
            params[name] = 1.0 + 0.1 * noise
        elif name.endswith("block_sparse_moe.gate.weight") or name.endswith("ffn.router.layer.weight"):
            # a router with weights this large routes unevenly, so the
            # routing weights and the router's gradient matter
            params[name] = ROUTER_INIT * noise
        else:
            params[name] = 0.02 * noise
    return params


# ---------------------------------------------------------------------------
# Model math (float64)
# ---------------------------------------------------------------------------

def rope_inv_freq(cfg, verbose=False):
    d = head_dim_of(cfg)
    theta = float(cfg["rope_theta"])
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rs = cfg.get("rope_scaling")
    regimes = None
    if rs is not None:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "default":
            pass
        elif kind == "linear":
            inv = inv / float(rs["factor"])
        elif kind == "llama3":
            factor = float(rs["factor"])
            lo = float(rs["low_freq_factor"])
            hi = float(rs["high_freq_factor"])
            orig = float(rs["original_max_position_embeddings"])
            low_freq_wavelen = orig / lo
            high_freq_wavelen = orig / hi
            new = []
            regimes = []
            for f in inv.tolist():
                wavelen = 2.0 * math.pi / f
                if wavelen > low_freq_wavelen:
                    new.append(f / factor)
                    regimes.append("low")
                elif wavelen < high_freq_wavelen:
                    new.append(f)
                    regimes.append("high")
                else:
                    smooth = (orig / wavelen - lo) / (hi - lo)
                    new.append((1.0 - smooth) * f / factor + smooth * f)
                    regimes.append("mid")
            inv = torch.tensor(new, dtype=torch.float64)
        else:
            raise ValueError("unsupported rope_scaling %r" % (rs,))
    return inv, regimes


def document_ids(segment_ids, B, T):
    """Document index per position: a document is a run of equal consecutive ids."""
    if segment_ids is None:
        return torch.zeros((B, T), dtype=torch.int64)
    seg = segment_ids
    change = torch.zeros((B, T), dtype=torch.int64)
    change[:, 1:] = (seg[:, 1:] != seg[:, :-1]).to(torch.int64)
    return torch.cumsum(change, dim=1)


def position_ids(doc):
    B, T = doc.shape
    pos = torch.zeros((B, T), dtype=torch.int64)
    for b in range(B):
        p = 0
        for t in range(T):
            if t > 0 and doc[b, t] != doc[b, t - 1]:
                p = 0
            pos[b, t] = p
            p += 1
    return pos


def sliding_window(cfg):
    """The attention window: HF MistralConfig's sliding_window (4096 when the
    key is absent, None = full attention when it is null); MixtralConfig's
    (None when absent); Llama has none."""
    if cfg.get("model_type") == "mixtral":
        return cfg.get("sliding_window")
    if cfg.get("model_type") != "mistral":
        return None
    return cfg.get("sliding_window", 4096)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


def linear(x, w, b=None):
    y = x @ w.t()
    if b is not None:
        y = y + b
    return y


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, P, input_ids, segment_ids=None, lora=None, router_logits=None):
    """Return logits (B,T,V) float64. P maps HF names to float64 tensors.

    lora, when given, is (scale, {module name: (A, B)}): the projection named
    e.g. "model.layers.0.self_attn.q_proj" computes x Wᵀ + b + scale·(x Aᵀ) Bᵀ
    with A (r, in) and B (out, r). router_logits, when a list, receives each
    Mixtral layer's router logits (B*T, E)."""
    if cfg.get("model_type") == "dbrx":
        return dbrx_forward(cfg, P, input_ids, segment_ids, router_logits, lora=lora)
    B, T = input_ids.shape
    H = cfg["hidden_size"]
    nH, nKV, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg)
    eps = float(cfg["rms_norm_eps"])
    doc = document_ids(segment_ids, B, T)
    pos = position_ids(doc).to(torch.float64)

    inv_freq, _ = rope_inv_freq(cfg)
    freqs = pos[..., None] * inv_freq[None, None, :]          # (B,T,hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)                   # (B,T,hd)
    cos = emb.cos()[:, None, :, :]                            # (B,1,T,hd)
    sin = emb.sin()[:, None, :, :]

    causal = torch.tril(torch.ones((T, T), dtype=torch.bool))
    window = sliding_window(cfg)
    if window is not None:
        # Mistral: query t sees key j only when t - j < sliding_window.
        idx = torch.arange(T)
        causal = causal & ((idx[:, None] - idx[None, :]) < window)
    same_doc = doc[:, :, None] == doc[:, None, :]             # (B,T,T)
    allowed = (causal[None] & same_doc)[:, None, :, :]        # (B,1,T,T)

    def opt(name):
        return P.get(name)

    def proj(x, mod):
        y = linear(x, P[mod + ".weight"], opt(mod + ".bias"))
        if lora is not None and mod in lora[1]:
            a, b = lora[1][mod]
            y = y + lora[0] * ((x @ a.t()) @ b.t())
        return y

    x = P["model.embed_tokens.weight"][input_ids]            # (B,T,H)
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        h = rms_norm(x, P[p + "input_layernorm.weight"], eps)
        q = proj(h, p + "self_attn.q_proj")
        k = proj(h, p + "self_attn.k_proj")
        v = proj(h, p + "self_attn.v_proj")
        q = q.view(B, T, nH, hd).transpose(1, 2)              # (B,nH,T,hd)
        k = k.view(B, T, nKV, hd).transpose(1, 2)             # (B,nKV,T,hd)
        v = v.view(B, T, nKV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = nH // nKV
        k = k.repeat_interleave(rep, dim=1)                   # head j uses kv head j // rep
        v = v.repeat_interleave(rep, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)    # (B,nH,T,T)
        scores = scores.masked_fill(~allowed, float("-inf"))
        attn = torch.softmax(scores, dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(B, T, nH * hd)
        o = proj(o, p + "self_attn.o_proj")
        x = x + o
        h = rms_norm(x, P[p + "post_attention_layernorm.weight"], eps)
        if is_moe(cfg):
            y, logits = moe_block(cfg, P, p + "block_sparse_moe.", h.reshape(B * T, H), proj)
            if router_logits is not None:
                router_logits.append(logits)
            x = x + y.view(B, T, H)
            continue
        gate = proj(h, p + "mlp.gate_proj")
        up = proj(h, p + "mlp.up_proj")
        act = gate * torch.sigmoid(gate) * up
        x = x + proj(act, p + "mlp.down_proj")
    x = rms_norm(x, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else P["lm_head.weight"]
    return x @ head.t()


# ---------------------------------------------------------------------------
# Mixtral sparse mixture of experts (HF MixtralSparseMoeBlock), written from
# its definition and computed densely: every expert runs on every token and
# a routing matrix that is zero off the top-k picks combines them.
# ---------------------------------------------------------------------------

ROUTER_INIT = 0.2


def is_moe(cfg):
    return cfg.get("model_type") in ("mixtral", "dbrx")


def moe_dims(cfg):
    """(experts, experts per token) of a Mixtral or DBRX config."""
    if cfg.get("model_type") == "dbrx":
        f = cfg["ffn_config"]
        return f["moe_num_experts"], f["moe_top_k"]
    return cfg["num_local_experts"], cfg["num_experts_per_tok"]


def aux_coef(cfg):
    """The load-balancing loss's weight, or None when it is off."""
    if not is_moe(cfg) or not cfg.get("output_router_logits"):
        return None
    if cfg.get("model_type") == "dbrx":
        return cfg["ffn_config"]["moe_loss_weight"]
    return cfg["router_aux_loss_coef"]


def moe_routing(cfg, logits):
    """(N,E) combine weights: softmax over experts, the top num_experts_per_tok
    kept and renormalised to sum 1, zero elsewhere; and the picks (N,k)."""
    probs = torch.softmax(logits, dim=-1)
    top, picks = torch.topk(probs, cfg["num_experts_per_tok"], dim=-1)
    top = top / top.sum(dim=-1, keepdim=True)
    route = torch.zeros_like(probs).scatter(-1, picks, top)
    return route, picks


def moe_block(cfg, P, p, x, proj):
    """x (N,H) → (sum over experts of route·w2(silu(w1 x) * w3 x), router logits).
    proj(x, module) is the (possibly LoRA-adapted) linear layer, so a LoRA on
    an expert acts only where the routing weight is non-zero."""
    logits = proj(x, p + "gate")
    route, _ = moe_routing(cfg, logits)
    y = torch.zeros_like(x)
    for e in range(cfg["num_local_experts"]):
        q = p + "experts.%d." % e
        g, u = proj(x, q + "w1"), proj(x, q + "w3")
        y = y + route[:, e:e + 1] * proj(g * torch.sigmoid(g) * u, q + "w2")
    return y, logits


# ---------------------------------------------------------------------------
# DBRX (HF DbrxForCausalLM), written from its definition: LayerNorm without
# bias, a fused Wqkv whose output is clamped to [-clip_qkv, clip_qkv], top-k
# experts weighted by their probabilities over the p-norm of the chosen ones
# (moe_normalize_expert_weights; none when null), fused expert weights
# w1, v1, w2 of shape (E*F, C) with w2 applied untransposed. DbrxFFN returns
# the router's probabilities as its "router logits", so the load-balancing
# loss softmaxes probabilities.
# ---------------------------------------------------------------------------

DBRX_NORM = re.compile(r"norm_[12f]\.weight$")


def dbrx_config(name, clip, p_norm, aux, tied, top_k):
    return {
        "architectures": ["DbrxForCausalLM"], "model_type": "dbrx",
        "d_model": 32, "n_heads": 4, "n_layers": 2, "max_seq_len": 64, "vocab_size": 64,
        "resid_pdrop": 0.0, "emb_pdrop": 0.0,
        "attn_config": {"attn_pdrop": 0.0, "clip_qkv": clip, "kv_n_heads": 2, "rope_theta": 500000.0},
        "ffn_config": {"ffn_act_fn": {"name": "silu"}, "ffn_hidden_size": 40, "moe_num_experts": 4,
                       "moe_top_k": top_k, "moe_jitter_eps": None, "moe_loss_weight": 0.05,
                       "moe_normalize_expert_weights": p_norm},
        "output_router_logits": aux, "tie_word_embeddings": tied, "torch_dtype": "float32",
    }


def dbrx_param_shapes(cfg):
    V, H, L = cfg["vocab_size"], cfg["d_model"], cfg["n_layers"]
    hd = H // cfg["n_heads"]
    kvd = cfg["attn_config"]["kv_n_heads"] * hd
    E, F = cfg["ffn_config"]["moe_num_experts"], cfg["ffn_config"]["ffn_hidden_size"]
    out = [("transformer.wte.weight", (V, H))]
    for i in range(L):
        p = "transformer.blocks.%d." % i
        out += [(p + "norm_attn_norm.norm_1.weight", (H,)),
                (p + "norm_attn_norm.attn.Wqkv.weight", (H + 2 * kvd, H)),
                (p + "norm_attn_norm.attn.out_proj.weight", (H, H)),
                (p + "norm_attn_norm.norm_2.weight", (H,)),
                (p + "ffn.router.layer.weight", (E, H))]
        out += [(p + "ffn.experts.mlp." + m, (E * F, H)) for m in ("w1", "v1", "w2")]
    out.append(("transformer.norm_f.weight", (H,)))
    if not cfg["tie_word_embeddings"]:
        out.append(("lm_head.weight", (V, H)))
    return out


def layer_norm(x, w, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + eps) * w


def dbrx_forward(cfg, P, input_ids, segment_ids=None, router_logits=None, qkv_pre=None, lora=None):
    """Logits (B,T,V); router_logits receives each layer's router
    probabilities (N,E), qkv_pre each layer's Wqkv output before the clamp.
    lora as for forward: a LoRA on Wqkv adds to its output before the clamp,
    as PEFT's wrapper of the Linear does."""

    def proj(x, mod):
        y = x @ P[mod + ".weight"].t()
        if lora is not None and mod in lora[1]:
            a, b = lora[1][mod]
            y = y + lora[0] * ((x @ a.t()) @ b.t())
        return y

    B, T = input_ids.shape
    H, nH = cfg["d_model"], cfg["n_heads"]
    ac, fc = cfg["attn_config"], cfg["ffn_config"]
    nKV, hd = ac["kv_n_heads"], H // nH
    E, F, k = fc["moe_num_experts"], fc["ffn_hidden_size"], fc["moe_top_k"]
    doc = document_ids(segment_ids, B, T)
    pos = position_ids(doc).to(torch.float64)
    inv = 1.0 / (ac["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    freqs = pos[..., None] * inv[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]
    causal = torch.tril(torch.ones((T, T), dtype=torch.bool))
    allowed = (causal[None] & (doc[:, :, None] == doc[:, None, :]))[:, None]

    x = P["transformer.wte.weight"][input_ids]
    for i in range(cfg["n_layers"]):
        p = "transformer.blocks.%d." % i
        h = layer_norm(x, P[p + "norm_attn_norm.norm_1.weight"])
        qkv = proj(h, p + "norm_attn_norm.attn.Wqkv")
        if qkv_pre is not None:
            qkv_pre.append(qkv.detach())
        if ac["clip_qkv"] is not None:
            qkv = qkv.clamp(min=-ac["clip_qkv"], max=ac["clip_qkv"])
        q, kk, v = qkv.split([H, nKV * hd, nKV * hd], dim=-1)
        q = q.view(B, T, nH, hd).transpose(1, 2)
        kk = kk.view(B, T, nKV, hd).transpose(1, 2)
        v = v.view(B, T, nKV, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        kk = kk * cos + rotate_half(kk) * sin
        kk, v = kk.repeat_interleave(nH // nKV, dim=1), v.repeat_interleave(nH // nKV, dim=1)
        scores = (q @ kk.transpose(-1, -2)) / math.sqrt(hd)
        attn = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(B, T, H)
        x = x + proj(o, p + "norm_attn_norm.attn.out_proj")

        h = layer_norm(x, P[p + "norm_attn_norm.norm_2.weight"]).reshape(B * T, H)
        probs = torch.softmax(proj(h, p + "ffn.router.layer"), dim=-1)
        if router_logits is not None:
            router_logits.append(probs)
        top, picks = torch.topk(probs, k, dim=-1)
        if fc["moe_normalize_expert_weights"] is not None:
            top = top / torch.norm(top, p=fc["moe_normalize_expert_weights"], dim=-1, keepdim=True)
        route = torch.zeros_like(probs).scatter(-1, picks, top)
        w1 = P[p + "ffn.experts.mlp.w1"].view(E, F, H)
        v1 = P[p + "ffn.experts.mlp.v1"].view(E, F, H)
        w2 = P[p + "ffn.experts.mlp.w2"].view(E, F, H)
        y = torch.zeros_like(h)
        for e in range(E):
            g, u = h @ w1[e].t(), h @ v1[e].t()
            y = y + route[:, e:e + 1] * ((g * torch.sigmoid(g) * u) @ w2[e])
        x = x + y.view(B, T, H)
    x = layer_norm(x, P["transformer.norm_f.weight"])
    head = P["transformer.wte.weight"] if cfg["tie_word_embeddings"] else P["lm_head.weight"]
    return x @ head.t()


def find_dbrx_seed(cfg, seed, ids, seg):
    """The first seed from seed on whose routing check_routing accepts and
    whose Wqkv outputs are, where clip_qkv is set, some of them clamped and
    none within 1e-6 of the limit (so float32 agrees on which are)."""
    clip = cfg["attn_config"]["clip_qkv"]
    for s in range(seed, seed + 100 * 500, 100):
        P = {k: v.to(torch.float64) for k, v in init_params(cfg, s).items()}
        rl, pre = [], []
        dbrx_forward(cfg, P, ids, seg, rl, pre)
        if check_routing(cfg, rl, False) is None:
            continue
        if clip is not None:
            a = torch.cat([t.flatten() for t in pre]).abs()
            if (a > clip).sum().item() == 0 or ((a - clip).abs() < 1e-6).any():
                continue
        return s
    raise AssertionError("no seed gives the routing and clamping the case needs")


def check_clip_matters(cfg, params32, input_ids, segment_ids, logits):
    full = json.loads(json.dumps(cfg))
    full["attn_config"]["clip_qkv"] = None
    P = {k: v.to(torch.float64) for k, v in params32.items()}
    pre = []
    diff = (dbrx_forward(full, P, input_ids, segment_ids, None, pre) - logits).abs().max().item()
    clipped = sum((t.abs() > cfg["attn_config"]["clip_qkv"]).sum().item() for t in pre)
    assert diff > 1e-5, "clip_qkv does not change the logits (max diff %g)" % diff
    return "%d values clamped, unclamped logits differ by %.1e" % (clipped, diff)


def load_balancing_loss(cfg, router_logits):
    """HF load_balancing_loss_func without an attention mask: over the router
    logits of every layer concatenated, num_experts times the sum over experts
    of (fraction of top-k picks that went to the expert) x (mean router
    probability of the expert)."""
    E, k = moe_dims(cfg)
    logits = torch.cat(router_logits, dim=0)
    probs = torch.softmax(logits, dim=-1)
    _, picks = torch.topk(probs, k, dim=-1)
    mask = torch.nn.functional.one_hot(picks, E).to(probs.dtype)   # (N,k,E)
    tokens_per_expert = mask.mean(dim=0)                            # (k,E)
    prob_per_expert = probs.mean(dim=0)                             # (E)
    return E * (tokens_per_expert * prob_per_expert[None, :]).sum()


def check_routing(cfg, router_logits, want_empty):
    """Routing must be unambiguous at float32 precision (the k-th and
    (k+1)-th router logits apart), and when want_empty some layer must leave
    an expert without tokens. Returns per-layer token counts per expert."""
    E, k = moe_dims(cfg)
    counts = []
    for logits in router_logits:
        if cfg.get("model_type") == "dbrx":
            logits = logits.log()   # DBRX hands out probabilities; log-probability gaps are logit gaps
        srt = logits.detach().sort(dim=-1, descending=True).values
        gap = (srt[:, k - 1] - srt[:, k]).min().item()
        if gap < 1e-3:
            return None
        _, picks = torch.topk(logits.detach(), k, dim=-1)
        counts.append(torch.bincount(picks.flatten(), minlength=E).tolist())
    if want_empty and not any(0 in c for c in counts):
        return None
    return counts


def loss_terms(logits, labels, segment_ids=None):
    """(sum of CE over counted positions, number of counted positions)."""
    B, T, V = logits.shape
    doc = document_ids(segment_ids, B, T)
    tgt = labels[:, 1:]
    counted = (tgt != IGNORE_INDEX) & (doc[:, :-1] == doc[:, 1:])
    lg = logits[:, :-1, :]
    logz = torch.logsumexp(lg, dim=-1)
    safe_tgt = torch.where(counted, tgt, torch.zeros_like(tgt))
    picked = lg.gather(-1, safe_tgt[..., None])[..., 0]
    ce = (logz - picked) * counted.to(logits.dtype)
    return ce.sum(), int(counted.sum().item())


def run_case(cfg, params32, input_ids, labels, segment_ids):
    P = {k: v.to(torch.float64).requires_grad_(True) for k, v in params32.items()}
    router_logits = []
    logits = forward(cfg, P, input_ids, segment_ids, router_logits=router_logits)
    total, n = loss_terms(logits, labels, segment_ids)
    loss = total / n
    if aux_coef(cfg) is not None:
        # MixtralForCausalLM, DbrxForCausalLM: loss += coef * aux_loss
        loss = loss + aux_coef(cfg) * load_balancing_loss(cfg, router_logits)
    names = sorted(P)
    grads = torch.autograd.grad(loss, [P[k] for k in names])
    return logits.detach(), loss.detach(), n, dict(zip(names, grads))


# ---------------------------------------------------------------------------
# Self-check: packing == separate documents
# ---------------------------------------------------------------------------

def check_packing(cfg, params32, input_ids, labels, segment_ids, logits, loss, grads):
    B, T = input_ids.shape
    doc = document_ids(segment_ids, B, T)
    P = {k: v.to(torch.float64).requires_grad_(True) for k, v in params32.items()}
    total = None
    count = 0
    ndocs = 0
    max_diff = 0.0
    for b in range(B):
        t = 0
        while t < T:
            e = t
            while e < T and doc[b, e] == doc[b, t]:
                e += 1
            ids = input_ids[b:b + 1, t:e]
            lab = labels[b:b + 1, t:e]
            lg = forward(cfg, P, ids, None)           # unpacked, positions from 0
            diff = (lg.detach() - logits[b:b + 1, t:e]).abs().max().item()
            max_diff = max(max_diff, diff)
            assert diff < 1e-10, "packed vs separate logits differ by %g" % diff
            s, c = loss_terms(lg, lab, None)
            total = s if total is None else total + s
            count += c
            ndocs += 1
            t = e
    sep_loss = total / count
    ldiff = abs(sep_loss.item() - loss.item())
    assert ldiff < 1e-12, "packed vs separate loss differ by %g" % ldiff
    names = sorted(P)
    sep_grads = torch.autograd.grad(sep_loss, [P[k] for k in names])
    gdiff = max((g - grads[k]).abs().max().item() for k, g in zip(names, sep_grads))
    assert gdiff < 1e-12, "packed vs separate grads differ by %g" % gdiff
    return ndocs, count, max_diff, ldiff, gdiff


def check_window_matters(cfg, params32, input_ids, segment_ids, logits):
    """The window must change the logits (else the fixture proves nothing)."""
    full = dict(cfg)
    full["sliding_window"] = None
    P = {k: v.to(torch.float64) for k, v in params32.items()}
    diff = (forward(full, P, input_ids, segment_ids) - logits).abs().max().item()
    assert diff > 1e-4, "sliding window does not change the logits (max diff %g)" % diff
    return "full attention differs by %.1e" % diff



# ---------------------------------------------------------------------------
# LoRA (PEFT layout), written from the math: y = x Wᵀ + b + s·(x Aᵀ) Bᵀ with
# s = alpha/r, or alpha/sqrt(r) with use_rslora. Base weights are constants;
# only A and B get gradients.
# ---------------------------------------------------------------------------

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_lora_cases():
    """(name, base case name, base seed, lora seed, r, alpha, use_rslora, targets,
    segment_ids, bf16 base, need): need is None, "empty" (some layer leaves an
    expert without tokens under the adapted routing) or "clip" (clip_qkv
    clamps some adapted Wqkv outputs); the lora seed steps by 100 until it holds."""
    packed = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2],
                           [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]], dtype=torch.int64)
    return [
        # GQA (4 query heads over 2 kv heads) with packed rows, every projection.
        ("gqa_packed", "gqa", 21, 31, 4, 8.0, False, LORA_TARGETS, packed, False, None),
        # Tied embeddings, llama3 rope scaling, head_dim set; rsLoRA on a subset.
        ("tied_llama3_rslora", "tied_llama3", 22, 32, 8, 16.0, True,
         ["q_proj", "v_proj", "o_proj", "down_proj"], None, False, None),
        # Biases on every projection, linear rope scaling, packed rows.
        ("bias_packed", "bias_packed", 23, 33, 2, 4.0, False, LORA_TARGETS, "base", False, None),
        # A bf16 checkpoint (Mistral, sliding window, packed): the base weights
        # are bf16 values, the math float64 as everywhere.
        ("mistral_bf16_base", "mistral", 24, 34, 4, 4.0, True, ["q_proj", "k_proj", "up_proj"], "base", True, None),
        # Mixtral with the load-balancing loss: the attention projections
        # adapted (the experts are not), the aux loss's gradient reaching them.
        ("mixtral_aux_attn", "mixtral_aux", 25, 35, 4, 8.0, False, ["q_proj", "k_proj", "v_proj", "o_proj"], "base", False, None),
        # Mixtral, PEFT's usual targets: the attention projections and every
        # expert's w1, w2, w3, plus the router (gate); GQA, packed rows.
        ("mixtral_experts", "mixtral", 26, 36, 4, 8.0, False,
         ["q_proj", "k_proj", "v_proj", "o_proj", "gate", "w1", "w2", "w3"], "base", False, None),
        # The experts alone with rsLoRA, the aux loss and a sliding window, in
        # a routing that leaves an expert without tokens (its gradients are 0).
        ("mixtral_experts_rslora_empty", "mixtral_aux", 27, 37, 8, 16.0, True,
         ["w1", "w2", "w3"], "base", False, "empty"),
        # DBRX: the fused Wqkv (before its clamp, which is active) and out_proj.
        ("dbrx_qkv_clip", "dbrx", 28, 38, 4, 8.0, False, ["Wqkv", "out_proj"], "base", False, "clip"),
    ]


def lora_modules(cfg, targets):
    """Ordered (module name, in, out) of every adapted projection."""
    out = []
    for name, shape in param_shapes(cfg):
        # PEFT matches a target against the module name's last component;
        # DBRX's fused experts are parameters, not Linear modules.
        if not name.endswith(".weight") or len(shape) != 2 or "embed" in name or "wte" in name or "lm_head" in name:
            continue
        mod = name[:-len(".weight")]
        if mod.split(".")[-1] in targets:
            out.append((mod, shape[1], shape[0]))
    assert {m.split(".")[-1] for m, _, _ in out} == set(targets), "a target matches no module"
    return out


def init_lora(cfg, targets, r, seed):
    """A ~ U(-1/sqrt(in), 1/sqrt(in)) as PEFT initialises it; B non-zero
    (PEFT starts it at zero) so both A's and B's gradients are exercised."""
    g = torch.Generator().manual_seed(seed)
    ab = {}
    for mod, fin, fout in lora_modules(cfg, targets):
        a = (torch.rand((r, fin), generator=g, dtype=torch.float32) * 2 - 1) / math.sqrt(fin)
        b = 0.05 * torch.randn((fout, r), generator=g, dtype=torch.float32)
        ab[mod] = (a, b)
    return ab


def peft_name(mod, which):
    return "base_model.model.%s.lora_%s.weight" % (mod, which)


def adapter_config(r, alpha, use_rslora, targets):
    """adapter_config.json as PEFT 0.18 writes it, including keys left at
    their neutral defaults, which a loader must accept."""
    return {
        "alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": "..",
        "bias": "none", "corda_config": None, "ensure_weight_tying": False, "eva_config": None,
        "exclude_modules": None, "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "layer_replication": None, "layers_pattern": None,
        "layers_to_transform": None, "loftq_config": {}, "lora_alpha": alpha, "lora_bias": False,
        "lora_dropout": 0.05, "megatron_config": None, "megatron_core": "megatron.core",
        "modules_to_save": None, "peft_type": "LORA", "peft_version": "0.18.1",
        "qalora_group_size": 16, "r": r, "rank_pattern": {}, "revision": None,
        "target_modules": sorted(targets), "target_parameters": None, "task_type": "CAUSAL_LM",
        "trainable_token_indices": None, "use_dora": False, "use_qalora": False,
        "use_rslora": use_rslora,
    }


def run_lora_case(cfg, params32, ab32, scale, input_ids, labels, segment_ids):
    P = {k: v.to(torch.float64) for k, v in params32.items()}
    L = {m: (a.to(torch.float64).requires_grad_(True), b.to(torch.float64).requires_grad_(True))
         for m, (a, b) in ab32.items()}
    router_logits = []
    logits = forward(cfg, P, input_ids, segment_ids, (scale, L), router_logits)
    total, n = loss_terms(logits, labels, segment_ids)
    loss = total / n
    if is_moe(cfg):
        assert check_routing(cfg, router_logits, False) is not None, "routing ambiguous at float32"
        if aux_coef(cfg) is not None:
            loss = loss + aux_coef(cfg) * load_balancing_loss(cfg, router_logits)
    mods = sorted(L)
    flat = [t for m in mods for t in L[m]]
    gs = torch.autograd.grad(loss, flat)
    grads = {}
    for i, m in enumerate(mods):
        grads[peft_name(m, "A")], grads[peft_name(m, "B")] = gs[2 * i], gs[2 * i + 1]
    base = forward(cfg, P, input_ids, segment_ids)
    diff = (base - logits.detach()).abs().max().item()
    assert diff > 1e-4, "the adapter does not change the logits (max diff %g)" % diff
    counts = check_routing(cfg, router_logits, False) if is_moe(cfg) else None
    for k, g in grads.items():
        ex = EXPERT_MOD.search(k)
        idle = ex is not None and counts[int(ex.group(1))][int(ex.group(2))] == 0
        assert (g.abs().max().item() == 0) == idle, "gradient of %s: zero %s, expert idle %s" % (k, not idle, idle)
    return logits.detach(), loss.detach(), n, grads


EXPERT_MOD = re.compile(r"layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.")


def lora_case_holds(cfg, params32, ab32, scale, ids, seg, need):
    """Whether the adapted model meets the case's need (see make_lora_cases)
    and, with experts, routes unambiguously at float32."""
    if need is None and not is_moe(cfg):
        return True
    P = {k: v.to(torch.float64) for k, v in params32.items()}
    L = {m: (a.to(torch.float64), b.to(torch.float64)) for m, (a, b) in ab32.items()}
    rl, pre = [], []
    if cfg.get("model_type") == "dbrx":
        dbrx_forward(cfg, P, ids, seg, rl, pre, lora=(scale, L))
    else:
        forward(cfg, P, ids, seg, (scale, L), rl)
    if need == "clip":
        clip = cfg["attn_config"]["clip_qkv"]
        a = torch.cat([t.flatten() for t in pre]).abs()
        if (a > clip).sum().item() == 0 or ((a - clip).abs() < 1e-6).any():
            return False
    return check_routing(cfg, rl, need == "empty") is not None


def write_lora_cases(out_dir):
    base_cases = {c[0]: c for c in make_cases()}
    for name, base, seed, lseed, r, alpha, rs, targets, seg, bf16, need in make_lora_cases():
        _, cfg, _, ids, labels, base_seg = base_cases[base]
        cfg = dict(cfg)
        if seg == "base":
            seg = base_seg
        labels = labels.clone()
        if seg is not None:
            labels[0, 2] = IGNORE_INDEX
        d = os.path.join(out_dir, name)
        os.makedirs(os.path.join(d, "adapter"), exist_ok=True)
        if is_moe(cfg):
            seed = base_cases[base][2]   # the base case's seed, whose routing is checked
        params = init_params(cfg, seed)
        if bf16:
            cfg["torch_dtype"] = "bfloat16"
            params = {k: v.to(torch.bfloat16).to(torch.float32) for k, v in params.items()}
        scale = alpha / math.sqrt(r) if rs else alpha / r
        for lseed in range(lseed, lseed + 100 * 200, 100):
            ab = init_lora(cfg, targets, r, lseed)
            if lora_case_holds(cfg, params, ab, scale, ids, seg, need):
                break
        else:
            raise AssertionError("%s: no lora seed meets %s" % (name, need))
        logits, loss, n, grads = run_lora_case(cfg, params, ab, scale, ids, labels, seg)

        write_json(os.path.join(d, "config.json"), cfg)
        write_safetensors(os.path.join(d, "model.safetensors"), params, "BF16" if bf16 else "F32")
        write_batch(os.path.join(d, "batch.json"), ids, labels, seg)
        write_json(os.path.join(d, "adapter", "adapter_config.json"), adapter_config(r, alpha, rs, targets))
        tensors = {}
        for m, (a, b) in ab.items():
            tensors[peft_name(m, "A")], tensors[peft_name(m, "B")] = a, b
        write_safetensors(os.path.join(d, "adapter", "adapter_model.safetensors"), tensors)
        out_grads = {"loss": loss.reshape(())}
        out_grads.update(grads)
        write_safetensors(os.path.join(d, "grads.safetensors"), out_grads)
        write_safetensors(os.path.join(d, "logits.safetensors"), {"logits": logits})
        print("lora %-28s r=%d alpha=%g rslora=%s scale=%.6f targets=%d tensors=%d counted=%d loss=%.9f need=%s"
              % (name, r, alpha, rs, scale, len(targets), 2 * len(ab), n, loss.item(), need))

# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

def write_safetensors(path, tensors, dtype="F32"):
    """Minimal safetensors writer: F32 (or BF16 of values already bf16), tensors in sorted name order."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        if dtype == "BF16":
            b = t.to(torch.bfloat16)
            assert torch.equal(b.to(torch.float32), t), "%s is not bf16-exact" % name
            data = b.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)   # pad header so data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for d in blobs:
            f.write(d)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_batch(path, input_ids, labels, segment_ids):
    obj = {"input_ids": input_ids.tolist(), "labels": labels.tolist()}
    if segment_ids is not None:
        obj["segment_ids"] = segment_ids.tolist()
    # one row per line keeps the file compact and readable
    lines = ["{"]
    keys = list(obj)
    for i, k in enumerate(keys):
        rows = ",\n    ".join(json.dumps(r) for r in obj[k])
        lines.append('  "%s": [\n    %s\n  ]%s' % (k, rows, "," if i + 1 < len(keys) else ""))
    lines.append("}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="engine/testdata/parity")
    ap.add_argument("--lora-out", default="engine/testdata/lora")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    for name, cfg, seed, ids, labels, seg in make_cases():
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        params = init_params(cfg, seed)
        logits, loss, n, grads = run_case(cfg, params, ids, labels, seg)

        B, T = ids.shape
        extra = ""
        regimes = None if cfg.get("model_type") == "dbrx" else rope_inv_freq(cfg)[1]
        if regimes is not None:
            kinds = sorted(set(regimes))
            extra += " llama3 bands=%s" % ",".join(regimes)
            assert kinds == ["high", "low", "mid"], "llama3 case must hit all three regimes"
        if cfg.get("model_type") == "dbrx" and cfg["attn_config"]["clip_qkv"] is not None:
            extra += " clip-check OK (%s)" % check_clip_matters(cfg, params, ids, seg, logits)
        if sliding_window(cfg) is not None:
            extra += " window-check OK (%s)" % check_window_matters(cfg, params, ids, seg, logits)
        if is_moe(cfg):
            rl = []
            forward(cfg, {k: v.to(torch.float64) for k, v in params.items()}, ids, seg, router_logits=rl)
            extra += " experts-per-layer=%s" % check_routing(cfg, rl, False)
        if seg is not None:
            pcfg, ploss, pgrads = cfg, loss, grads
            if aux_coef(cfg) is not None:
                # the aux loss spans the batch; packing is checked without it
                pcfg = dict(cfg, output_router_logits=False)
                _, ploss, _, pgrads = run_case(pcfg, params, ids, labels, seg)
            ndocs, cnt, ldiff, lossdiff, gdiff = check_packing(
                pcfg, params, ids, labels, seg, logits, ploss, pgrads)
            assert cnt == n
            extra += (" packing-check OK (%d docs, max|dlogits|=%.1e, |dloss|=%.1e, max|dgrad|=%.1e)"
                      % (ndocs, ldiff, lossdiff, gdiff))

        write_json(os.path.join(d, "config.json"), cfg)
        write_safetensors(os.path.join(d, "model.safetensors"), params)
        write_batch(os.path.join(d, "batch.json"), ids, labels, seg)
        out_grads = {"loss": loss.reshape(())}
        out_grads.update(grads)
        write_safetensors(os.path.join(d, "grads.safetensors"), out_grads)
        write_safetensors(os.path.join(d, "logits.safetensors"), {"logits": logits})

        print("%-12s B=%d T=%d V=%d params=%d counted=%d loss=%.9f%s"
              % (name, B, T, cfg["vocab_size"], len(params), n, loss.item(), extra))
    write_lora_cases(args.lora_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
