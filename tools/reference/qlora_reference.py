#!/usr/bin/env python3
"""float64 reference for QLoRA: LoRA gradients on a dequantized NF4 base.

QLoRA computes y = x Wᵀ + s·(x Aᵀ) Bᵀ where W is the NF4 base dequantized
(code value times block scale). `hone dev dequantize` writes those W as f32;
this script runs the LoRA case of llama_reference.py (the same float64 math as
the other LoRA fixtures) on them and writes grads.safetensors: the loss and
the gradient of every adapter tensor under its PEFT name.

Usage:
    hone dev dequantize --model engine/testdata/lora/gqa_packed --quantize-base nf4 \
        --out engine/testdata/qlora/gqa_packed_nf4/dequantized
    /usr/bin/python3 tools/reference/qlora_reference.py \
        --model engine/testdata/qlora/gqa_packed_nf4/dequantized \
        --adapter engine/testdata/lora/gqa_packed/adapter \
        --batch engine/testdata/lora/gqa_packed/batch.json \
        --out engine/testdata/qlora/gqa_packed_nf4/grads.safetensors
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_reference as ref  # noqa: E402


def read_f32_safetensors(path):
    """{name: float32 tensor} of a safetensors file holding F32 tensors."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    out = {}
    for name, h in header.items():
        assert h["dtype"] == "F32", "%s: %s has dtype %s; write it with hone dev dequantize" % (path, name, h["dtype"])
        b, e = h["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype="<f4").reshape(h["shape"]).copy()
        out[name] = torch.from_numpy(arr)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="dequantized model directory (hone dev dequantize)")
    ap.add_argument("--adapter", required=True, help="PEFT adapter directory")
    ap.add_argument("--batch", required=True, help="batch.json (input_ids, labels, segment_ids)")
    ap.add_argument("--out", required=True, help="grads.safetensors to write")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    params = read_f32_safetensors(os.path.join(args.model, "model.safetensors"))
    with open(os.path.join(args.adapter, "adapter_config.json")) as f:
        acfg = json.load(f)
    r, alpha = acfg["r"], acfg["lora_alpha"]
    scale = alpha / math.sqrt(r) if acfg.get("use_rslora") else alpha / r
    tensors = read_f32_safetensors(os.path.join(args.adapter, "adapter_model.safetensors"))
    pre, suf_a = "base_model.model.", ".lora_A.weight"
    ab = {}
    for name in tensors:
        if name.endswith(suf_a):
            mod = name[len(pre):-len(suf_a)]
            ab[mod] = (tensors[name], tensors[pre + mod + ".lora_B.weight"])
    with open(args.batch) as f:
        batch = json.load(f)
    ids = torch.tensor(batch["input_ids"], dtype=torch.int64)
    labels = torch.tensor(batch["labels"], dtype=torch.int64)
    seg = torch.tensor(batch["segment_ids"], dtype=torch.int64) if "segment_ids" in batch else None

    _, loss, n, grads = ref.run_lora_case(cfg, params, ab, scale, ids, labels, seg)
    out = {"loss": loss.reshape(())}
    out.update(grads)
    ref.write_safetensors(args.out, out)
    print("qlora %s: %d adapter tensors, counted=%d loss=%.9f" % (args.out, 2 * len(ab), n, loss.item()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
