#!/usr/bin/env python3
"""Writes tokenizer/testdata/gpt4style: a small GPT-4-style (cl100k) byte-level
BPE tokenizer.json in the layout of DBRX's (GPT2Tokenizer class): the
cl100k Split regex (behavior Removed, invert true, as converted GPT-4
tokenizers write it) then ByteLevel without its own regex, a ByteLevel
post-processor (no BOS), a ByteLevel decoder, and DBRX's special tokens.

No DBRX tokenizer file is available offline, so the vocabulary is learned
here: the 256 byte symbols plus 400 merges trained by plain BPE on the words
of tokenizer/testdata/texts.json (pre-tokenized with the same regex through
the `regex` module). Deterministic: ties go to the lexicographically
smallest pair.

    python3 tools/reference/tokenizer/make_gpt4style.py   # needs the regex module
    node tools/reference/tokenizer/make_gpt4style_fixtures.mjs
"""
import collections
import json
import os

import regex

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../..")
PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
MERGES = 400
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def bytes_to_unicode():
    """GPT-2's byte → printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def main():
    b2u = bytes_to_unicode()
    with open(os.path.join(ROOT, "tokenizer/testdata/texts.json"), encoding="utf-8") as f:
        texts = json.load(f)
    words = collections.Counter()
    for t in texts:
        for w in regex.findall(PATTERN, t):
            words[tuple(b2u[b] for b in w.encode("utf-8"))] += 1
    vocab = {b2u[b]: i for i, b in enumerate(sorted(b2u))}
    merges = []
    for _ in range(MERGES):
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        merged = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    added = []
    for s in SPECIAL:
        added.append({"id": len(vocab), "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
        vocab[s] = len(vocab)
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Removed", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    tc = {"add_bos_token": False, "add_eos_token": False, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
          "pad_token": "<|pad|>", "unk_token": "<|endoftext|>", "clean_up_tokenization_spaces": True,
          "errors": "replace", "model_max_length": 32768, "tokenizer_class": "GPT2Tokenizer",
          "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"}
    out = os.path.join(ROOT, "tokenizer/testdata/gpt4style")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tc, f, ensure_ascii=False, indent=2)
        f.write("\n")
    print("wrote %s: %d tokens, %d merges" % (out, len(vocab), len(merges)))


if __name__ == "__main__":
    main()
